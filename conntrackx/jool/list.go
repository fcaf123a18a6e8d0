package jool

import (
	"fmt"

	"github.com/mdlayher/genetlink"
)

// Listings: Jool answers a "foreach" request one page at a time and sets
// the "more" flag when the caller should ask again after the page's last
// entry.

// maxPages bounds a listing, against a kernel that never clears the "more"
// flag. Jool sends about 50 BIB entries per page.
const maxPages = 1 << 16

// listing is one of Jool's paged "foreach" requests, for entries of type E.
type listing[E any] struct {
	op        string // "bib list", for errors
	marshal   func(h joolHeader, proto uint8, offset *E) (genetlink.Message, error)
	unmarshal func(attrs []byte) ([]E, error)
}

var (
	bibListing     = listing[BIBEntry]{"bib list", marshalBIBForeach, unmarshalBIBEntries}
	pool4Listing   = listing[Pool4Entry]{"pool4 list", marshalPool4Foreach, unmarshalPool4Entries}
	sessionListing = listing[SessionEntry]{"session list", marshalSessionForeach, unmarshalSessionEntries}
)

// page asks for the page after offset (nil: the first page); more is the
// kernel's "more" flag.
func (l listing[E]) page(j *Client, proto uint8, offset *E) (page []E, more bool, err error) {
	m, err := l.marshal(j.hdr, proto, offset)
	if err != nil {
		return nil, false, fmt.Errorf("jool %s: %w", l.op, err)
	}
	flags, attrs, err := j.execute(l.op, m)
	if err != nil {
		return nil, false, err
	}
	page, err = l.unmarshal(attrs)
	if err != nil {
		return nil, false, fmt.Errorf("jool %s: %w", l.op, err)
	}
	return page, flags&joolFlagMore != 0, nil
}

// each calls f with every page from the one after offset on, until the
// last page or until f returns false.
func (l listing[E]) each(j *Client, proto uint8, offset *E, f func(page []E) bool) error {
	for range maxPages {
		page, more, err := l.page(j, proto, offset)
		if err != nil {
			return err
		}
		if !f(page) || !more {
			return nil
		}
		if len(page) == 0 {
			return fmt.Errorf("jool %s: %w: empty page marked as not the last", l.op, errMalformed)
		}
		last := page[len(page)-1]
		offset = &last
	}
	return fmt.Errorf("jool %s: %w: more than %d pages", l.op, errMalformed, maxPages)
}

// all lists every entry.
func (l listing[E]) all(j *Client, proto uint8) ([]E, error) {
	var all []E
	err := l.each(j, proto, nil, func(page []E) bool {
		all = append(all, page...)
		return true
	})
	if err != nil {
		return nil, err
	}
	return all, nil
}
