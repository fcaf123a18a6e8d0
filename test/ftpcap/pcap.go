package ftpcap

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
	"github.com/gopacket/gopacket/pcapgo"
)

// Link types beyond the ones gopacket names.
const (
	// LinkTypeRaw12 is DLT_RAW as most BSDs and Linux number it in
	// files written without mapping to LINKTYPE_RAW.
	LinkTypeRaw12 layers.LinkType = 12
	// LinkTypeRaw14 is DLT_RAW as OpenBSD numbers it.
	LinkTypeRaw14 layers.LinkType = 14
)

// Link is a pcap link-layer framing for raw IP packets.
type Link struct {
	Type layers.LinkType
	// VLANs are 802.1Q tags (VLAN ids, outermost first) on Ethernet frames.
	VLANs []uint16
}

// The fake MAC addresses of Ethernet and SLL frames.
var (
	macClient = [6]byte{0x02, 0, 0, 0, 0, 0x01}
	macServer = [6]byte{0x02, 0, 0, 0, 0, 0x02}
)

// BSD address families of the Null and Loop link types.
const (
	afInet  = 2
	afInet6 = 24 // NetBSD and OpenBSD; FreeBSD uses 28, Darwin 30
)

// Frame returns p wrapped in the link layer of l.
func (l Link) Frame(p Packet) ([]byte, error) {
	ip := p.Data
	if len(ip) == 0 {
		return nil, errors.New("empty packet")
	}
	v6 := ip[0]>>4 == 6
	etype := uint16(layers.EthernetTypeIPv4)
	af := uint32(afInet)
	if v6 {
		etype = uint16(layers.EthernetTypeIPv6)
		af = afInet6
	}
	src, dst := macClient, macServer
	if p.From == Server {
		src, dst = dst, src
	}
	var h []byte
	switch l.Type {
	case layers.LinkTypeEthernet:
		h = append(h, dst[:]...)
		h = append(h, src[:]...)
		for _, v := range l.VLANs {
			h = binary.BigEndian.AppendUint16(h, uint16(layers.EthernetTypeDot1Q))
			h = binary.BigEndian.AppendUint16(h, v&0x0fff)
		}
		h = binary.BigEndian.AppendUint16(h, etype)
	case layers.LinkTypeRaw, LinkTypeRaw12, LinkTypeRaw14:
	case layers.LinkTypeIPv4:
		if v6 {
			return nil, errors.New("IPv6 packet on an IPv4 link type")
		}
	case layers.LinkTypeIPv6:
		if !v6 {
			return nil, errors.New("IPv4 packet on an IPv6 link type")
		}
	case layers.LinkTypeNull:
		h = binary.LittleEndian.AppendUint32(h, af) // host byte order of the writer
	case layers.LinkTypeLoop:
		h = binary.BigEndian.AppendUint32(h, af)
	case layers.LinkTypeLinuxSLL:
		h = binary.BigEndian.AppendUint16(h, 0) // packet type: to us
		h = binary.BigEndian.AppendUint16(h, 1) // ARPHRD_ETHER
		h = binary.BigEndian.AppendUint16(h, 6)
		h = append(h, src[:]...)
		h = append(h, 0, 0)
		h = binary.BigEndian.AppendUint16(h, etype)
	case layers.LinkTypeLinuxSLL2:
		h = binary.BigEndian.AppendUint16(h, etype)
		h = binary.BigEndian.AppendUint16(h, 0) // reserved
		h = binary.BigEndian.AppendUint32(h, 2) // interface index
		h = binary.BigEndian.AppendUint16(h, 1) // ARPHRD_ETHER
		h = append(h, 0, 6)                     // packet type: to us; address length
		h = append(h, src[:]...)                // address, padded to 8 bytes
		h = append(h, 0, 0)
	default:
		return nil, fmt.Errorf("link type %d not supported", l.Type)
	}
	return append(h, ip...), nil
}

// snaplen of the files written here.
const snaplen = 262144

// WritePcap writes pkts framed by l as a classic pcap file (microsecond
// timestamps).
func WritePcap(w io.Writer, l Link, pkts []Packet) error {
	pw := pcapgo.NewWriter(w)
	if err := pw.WriteFileHeader(snaplen, l.Type); err != nil {
		return err
	}
	for i, p := range pkts {
		f, err := l.Frame(p)
		if err != nil {
			return fmt.Errorf("packet %d: %w", i, err)
		}
		ci := gopacket.CaptureInfo{Timestamp: p.Time, CaptureLength: len(f), Length: len(f)}
		if err := pw.WritePacket(ci, f); err != nil {
			return err
		}
	}
	return nil
}

// WritePcapNg writes pkts framed by l as a pcapng file with one interface.
func WritePcapNg(w io.Writer, l Link, pkts []Packet) error {
	nw, err := pcapgo.NewNgWriter(w, l.Type)
	if err != nil {
		return err
	}
	for i, p := range pkts {
		f, err := l.Frame(p)
		if err != nil {
			return fmt.Errorf("packet %d: %w", i, err)
		}
		ci := gopacket.CaptureInfo{Timestamp: p.Time, CaptureLength: len(f), Length: len(f)}
		if err := nw.WritePacket(ci, f); err != nil {
			return err
		}
	}
	return nw.Flush()
}

// ReadPcap reads a pcap or pcapng file and returns the IP packet of every
// frame that has one, decoded with gopacket (independently of the project's
// own link-layer code), and the file's link type. Frames without an IP
// packet are skipped. The returned packets' From is not known and left
// zero.
func ReadPcap(r io.Reader) ([]Packet, layers.LinkType, error) {
	br := bufio.NewReader(r)
	magic, err := br.Peek(4)
	if err != nil {
		return nil, 0, fmt.Errorf("read capture header: %w", err)
	}
	type source interface {
		ReadPacketData() ([]byte, gopacket.CaptureInfo, error)
		LinkType() layers.LinkType
	}
	var src source
	if bytes.Equal(magic, []byte{0x0a, 0x0d, 0x0d, 0x0a}) {
		src, err = pcapgo.NewNgReader(br, pcapgo.DefaultNgReaderOptions)
	} else {
		src, err = pcapgo.NewReader(br)
	}
	if err != nil {
		return nil, 0, err
	}
	lt := src.LinkType()
	var out []Packet
	for {
		data, ci, err := src.ReadPacketData()
		if errors.Is(err, io.EOF) {
			return out, lt, nil
		}
		if err != nil {
			return out, lt, err
		}
		if ip := extractIP(lt, data); ip != nil {
			out = append(out, Packet{Time: ci.Timestamp, Data: ip})
		}
	}
}

func extractIP(lt layers.LinkType, frame []byte) []byte {
	var dec gopacket.Decoder
	switch lt {
	case layers.LinkTypeIPv4:
		dec = layers.LayerTypeIPv4
	case layers.LinkTypeIPv6:
		dec = layers.LayerTypeIPv6
	case layers.LinkTypeRaw, LinkTypeRaw12, LinkTypeRaw14:
		if len(frame) == 0 {
			return nil
		}
		dec = layers.LayerTypeIPv4
		if frame[0]>>4 == 6 {
			dec = layers.LayerTypeIPv6
		}
	default:
		dec = lt
	}
	p := gopacket.NewPacket(frame, dec, gopacket.Default)
	nl := p.NetworkLayer()
	if nl == nil {
		return nil
	}
	return append(append([]byte(nil), nl.LayerContents()...), nl.LayerPayload()...)
}
