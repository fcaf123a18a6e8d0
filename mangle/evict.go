package mangle

// The flow table's bound. A full table makes room by forgetting a flow
// whose loss costs nothing, and never one whose loss breaks its session:
//
//   - Half-open flows (no payload seen yet in either direction: a SYN, a
//     SYN-ACK, bare ACKs) go first, oldest first. A connection that a
//     client's SYN opens is not even a flow until its first payload, but a
//     record in a table of its own with its own bound (halfopen.go): a
//     flood of spoofed SYNs only ever evicts its own records.
//   - Then a flow whose state its next packet rebuilds: established, but
//     with nothing rewritten, held or awaited (closed flows first).
//   - A flow that matters (shifted sequence numbers, a held packet, a
//     command whose reply will be translated, a reply being translated, a
//     session that turned transparent or disabled translation) is never
//     evicted: when only such flows are left, the new flow is refused
//     (its packet passes unchanged, counted) rather than breaking one of
//     them. Idle and closed flows still leave through Expire.

// evictSample is how many flows a full table looks at for one that can go
// when no half-open flow is left (map iteration starts at a random place).
const evictSample = 64

// matters reports whether forgetting f would break its session: its next
// packet would come out with wrong numbers, or a reply would go
// untranslated, or a transparent session would be parsed again.
func (f *flow) matters() bool {
	if f.inHeldList || f.s[0].nheld+f.s[1].nheld > 0 {
		return true
	}
	if !f.translate || f.closed || !f.heard() {
		return false
	}
	if !f.s[0].hist.empty() || !f.s[1].hist.empty() {
		return true
	}
	if f.lenChanged || f.transparent || f.disabled || f.authPending || f.teardown || f.rep.active {
		return true
	}
	for i := 0; i < f.n; i++ {
		if f.pending[(f.phead+i)%maxPending].kind.translated() {
			return true
		}
	}
	return false
}

// linkHalfOpen appends a new flow to the list of half-open flows.
func (e *Engine) linkHalfOpen(f *flow) {
	f.halfOpen = true
	f.hoPrev, f.hoNext = e.hoTail, nil
	if e.hoTail != nil {
		e.hoTail.hoNext = f
	} else {
		e.hoHead = f
	}
	e.hoTail = f
	e.nHalfOpen++
}

// unlinkHalfOpen takes f off the list of half-open flows (its first
// payload, or it is dropped).
func (e *Engine) unlinkHalfOpen(f *flow) {
	if !f.halfOpen {
		return
	}
	if f.hoPrev != nil {
		f.hoPrev.hoNext = f.hoNext
	} else {
		e.hoHead = f.hoNext
	}
	if f.hoNext != nil {
		f.hoNext.hoPrev = f.hoPrev
	} else {
		e.hoTail = f.hoPrev
	}
	f.hoPrev, f.hoNext, f.halfOpen = nil, nil, false
	e.nHalfOpen--
}

// HalfOpen returns the number of connections that have seen no payload
// yet: half-open records and flows.
func (e *Engine) HalfOpen() int { return e.nHalfOpen + e.ho.n }

// makeRoom frees one place in a full flow table, or reports that none can
// be freed without breaking a session.
func (e *Engine) makeRoom() bool {
	if f := e.hoHead; f != nil {
		e.stats.HalfOpenEvicted++
		e.forgetState(f)
		e.dropFlow(f)
		return true
	}
	// Only flows that matter were found last time: look again only now
	// and then, so that a flood meeting a table of real sessions costs
	// little per packet.
	if e.noRoom > 0 {
		e.noRoom--
		return false
	}
	var victim *flow
	i := 0
	for _, f := range e.flows {
		if i++; i > evictSample {
			break
		}
		if f.matters() {
			continue
		}
		if f.closed {
			victim = f
			break
		}
		if victim == nil || f.last.Before(victim.last) {
			victim = f
		}
	}
	if victim == nil {
		e.noRoom = evictSample - 1
		return false
	}
	e.stats.FlowsEvicted++
	// Its saved state goes too (docs/STATE.md): the connection leaves the
	// set of those that wait for a daemon, and its next packet does not
	// bring the evicted state back.
	e.forgetState(victim)
	e.dropFlow(victim)
	return true
}
