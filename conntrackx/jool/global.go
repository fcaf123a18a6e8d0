package jool

// Jool's global configuration: only pool6 is read.

import (
	"fmt"
	"net/netip"

	"github.com/mdlayher/genetlink"
	"github.com/mdlayher/netlink"
)

// Pool6 returns the instance's pool6, the RFC 6052 prefix of the NAT64.
// ok is false when the instance has none configured.
func (j *Client) Pool6() (pool6 netip.Prefix, ok bool, err error) {
	// The globals reply may be paged, but pool6 is the second attribute,
	// always on the first page.
	_, attrs, err := j.execute("global display", marshalGlobalForeach(j.hdr))
	if err != nil {
		return netip.Prefix{}, false, err
	}
	pool6, ok, err = unmarshalGlobalPool6(attrs)
	if err != nil {
		return netip.Prefix{}, false, fmt.Errorf("jool global display: %w", err)
	}
	return pool6, ok, nil
}

// marshalGlobalForeach builds the request for the instance's global
// configuration (`jool global display`).
func marshalGlobalForeach(h joolHeader) genetlink.Message {
	return newJoolMessage(h, joolOpGlobalForeach, nil)
}

// unmarshalGlobalPool6 finds pool6 in a global configuration reply. ok is
// false when the instance has none.
func unmarshalGlobalPool6(attrs []byte) (pool6 netip.Prefix, ok bool, err error) {
	ad, err := netlink.NewAttributeDecoder(attrs)
	if err != nil {
		return netip.Prefix{}, false, fmt.Errorf("%w: globals: %v", errMalformed, err)
	}
	for ad.Next() {
		if ad.Type() == joolGlobalPool6 {
			pool6, ok = decodePrefix(ad, 16), true
		}
	}
	if err := ad.Err(); err != nil {
		return netip.Prefix{}, false, fmt.Errorf("%w: globals: %v", errMalformed, err)
	}
	return pool6, ok, nil
}
