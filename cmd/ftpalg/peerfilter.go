package main

import (
	"errors"
	"strconv"
	"strings"
)

// parsePortRange parses "LO-HI" (1 <= LO <= HI <= 65535), the Jool ALG's
// reserved port range of 'ftpalg run --jool-ports' and
// 'ftpalg rules --jool-ports'.
func parsePortRange(s string) ([2]uint16, error) {
	lo, hi, ok := strings.Cut(s, "-")
	a, err1 := strconv.ParseUint(lo, 10, 16)
	b, err2 := strconv.ParseUint(hi, 10, 16)
	if !ok || err1 != nil || err2 != nil || a == 0 || a > b {
		return [2]uint16{}, errors.New("want LO-HI, for example 61000-61999")
	}
	return [2]uint16{uint16(a), uint16(b)}, nil
}
