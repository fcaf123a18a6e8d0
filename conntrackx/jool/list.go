package jool

// Listings: Jool answers a "foreach" request one page at a time and sets
// the "more" flag when the caller should ask again after the page's last
// entry.

// maxPages bounds a listing, against a kernel that never clears the "more"
// flag. Jool sends about 50 BIB entries per page.
const maxPages = 1 << 16
