package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"text/tabwriter"
	"time"
)

// Kinds of session (docs/PROTOCOL.md).
const (
	k46 = "46" // IPv4 client c4 -> 203.0.113.10 -> IPv6 server s6
	k64 = "64" // IPv6 client c6 -> 2001:db8:64::198.51.100.10 -> IPv4 server s4
)

// outcome is what a cell is expected to do.
type outcome uint8

const (
	fails  outcome = iota + 1 // the transfer must fail
	works                     // the transfer must complete with the right content
	record                    // either way; only recorded (the servers differ)
)

func (o outcome) String() string {
	switch o {
	case fails:
		return "fails"
	case works:
		return "works"
	}
	return "either"
}

// cell is one transfer: a client sends one kind of data-channel command.
type cell struct {
	kind   string
	client string // curl, lftp, ftplib
	mode   string // the data-channel command the client sends
	// without is the expectation without the ALG, by server ("" = any
	// server not listed). Cells that need the ALG must fail without it,
	// proving that the test exercises the ALG.
	without map[string]outcome
	// pinhole marks cells that, behind the default-drop firewall, can only
	// work once the daemon opens pinholes for data connections.
	pinhole bool
	// refuses names the servers that refuse the mode itself, with the
	// reason: the cell must fail there with or without the ALG (an
	// expected failure, logged as XFAIL).
	refuses map[string]string
	note    string
}

func (c cell) name() string {
	return c.kind + "/" + c.client + "/" + strings.ReplaceAll(c.mode, " ", "")
}

func (c cell) expectWithout(server string) outcome {
	if o, ok := c.without[server]; ok {
		return o
	}
	if o, ok := c.without[""]; ok {
		return o
	}
	return record
}

var (
	mustFail = map[string]outcome{"": fails}
	mustWork = map[string]outcome{"": works}
)

// Default active mode (RFC 959 section 3.2, RFC 6384 section 8): measured
// with Debian 12's servers. proftpd alone implements it, connecting to the
// client's control port minus 1 (not the port itself, as RFC 959 says; the
// lab's client listens on both).
var (
	defaultModeRefused = map[string]string{
		"vsftpd":    "vsftpd refuses a transfer before PORT or PASV: 425 Use PORT or PASV first.",
		"pure-ftpd": "pure-ftpd refuses a transfer before PORT or PASV: 425 No data connection",
	}
	defaultModeWithout = map[string]outcome{"vsftpd": fails, "pure-ftpd": fails, "": works}
)

// servers are the FTP servers of the matrix, in the order they run.
var servers = []string{"vsftpd", "proftpd", "pure-ftpd"}

// cells is the matrix of one server. Expectations without the ALG were
// measured on Debian 12's vsftpd 3.0.3, proftpd 1.3.8 and pure-ftpd 1.0.50
// through Tayga 0.9.2 (see test/README.md).
var cells = []cell{
	// 46: IPv4 client, IPv6 server (draft-tsou-behave-ftp46).
	{kind: k46, client: "curl", mode: "PASV", without: mustFail,
		note: "curl --ftp-pasv --disable-epsv --no-ftp-skip-pasv-ip"},
	{kind: k46, client: "curl", mode: "EPSV", without: mustWork,
		note: "EPSV carries no address; Tayga keeps ports"},
	{kind: k46, client: "curl", mode: "PORT", without: mustFail, note: "curl -P - --disable-eprt"},
	{kind: k46, client: "curl", mode: "EPRT 1", without: mustFail, note: "curl -P -"},
	{kind: k46, client: "lftp", mode: "PASV", without: map[string]outcome{"vsftpd": works, "": fails},
		note: "lftp's ftp:fix-pasv-address replaces vsftpd's 0,0,0,0 with the control address; proftpd's 227 does not parse"},
	{kind: k46, client: "lftp", mode: "EPSV", without: mustWork},
	{kind: k46, client: "lftp", mode: "PORT", without: mustFail},
	{kind: k46, client: "ftplib", mode: "PASV", without: mustFail},
	{kind: k46, client: "ftplib", mode: "EPSV", without: mustWork},
	{kind: k46, client: "ftplib", mode: "EPSV 1", without: mustWork,
		note: "RFC 2428 wants 522 on an IPv6 control connection; all three servers answer 229"},
	{kind: k46, client: "ftplib", mode: "EPSV 2", without: mustWork,
		note: "the client asks for IPv6 itself; the port is all it uses"},
	{kind: k46, client: "ftplib", mode: "PORT", without: mustFail},
	{kind: k46, client: "ftplib", mode: "EPRT 1", without: mustFail},
	{kind: k46, client: "ftplib", mode: "DEFAULT", without: defaultModeWithout, refuses: defaultModeRefused,
		note: "RFC 6384 section 8: no PORT; the server connects to the client's control address (proftpd to its port U-1)"},
	{kind: k46, client: "ftplib", mode: "EPRT 2 prefix", without: mustWork,
		note: "EPRT |2|2001:db8:64::192.0.2.2| names the client's own address as the server sees it"},

	// 64: IPv6 client, IPv4 server (RFC 6384).
	{kind: k64, client: "curl", mode: "EPSV", without: mustWork},
	{kind: k64, client: "curl", mode: "EPRT 2", without: mustFail, note: "curl -P -"},
	{kind: k64, client: "lftp", mode: "EPSV", without: mustWork},
	{kind: k64, client: "lftp", mode: "EPRT 2", without: mustFail},
	{kind: k64, client: "ftplib", mode: "EPSV", without: mustWork},
	{kind: k64, client: "ftplib", mode: "EPSV 2", without: mustFail},
	{kind: k64, client: "ftplib", mode: "LPSV", without: mustFail},
	{kind: k64, client: "ftplib", mode: "PASV control", without: mustWork,
		note: "PASV passes unchanged; the client uses the control connection's address with the 227 port"},
	{kind: k64, client: "ftplib", mode: "EPRT 2", without: mustFail},
	{kind: k64, client: "ftplib", mode: "LPRT", without: mustFail},
	{kind: k64, client: "ftplib", mode: "PORT seen", without: mustWork,
		note: "PORT names the client's pool address as the server sees it (unchanged by the ALG)"},
	{kind: k64, client: "ftplib", mode: "DEFAULT", without: defaultModeWithout, refuses: defaultModeRefused,
		note: "RFC 6384 section 8: no PORT; the server connects to the client's control address (proftpd to its port U-1)"},
	{kind: k64, client: "ftplib", mode: "EPSV ALL", without: mustFail,
		note: "RFC 6384 section 6: the ALG answers EPSV ALL with 504 (a server alone accepts it)"},
	{kind: k64, client: "ftplib", mode: "ALGS STATUS64", without: mustFail,
		note: "RFC 6384: the ALG answers 216 EPSVEPRT; a server alone does not know ALGS"},
	{kind: k64, client: "ftplib", mode: "EPSV 1 refused", without: mustFail,
		note: "RFC 6384/2428: the ALG answers 522 to EPSV 1 from an IPv6 client; the IPv4 servers answer 229"},
}

// result is what one run of a cell did.
type result struct {
	ok     bool
	detail string // the first line of the failure, or the data-channel reply
	took   time.Duration
}

func (r result) String() string {
	if r.ok {
		return "ok"
	}
	return "FAIL"
}

// TestIntegrationMatrix runs every cell against every server, first without
// the ALG, then with `ftpalg run` in the nat namespace.
func TestIntegrationMatrix(t *testing.T) {
	l := getLab(t)
	var rows []*matrixRow
	for _, srv := range servers {
		t.Run(srv, func(t *testing.T) {
			if err := l.startServer(srv); err != nil {
				t.Fatal(err)
			}
			if err := l.findClient4Seen(); err != nil {
				t.Fatal(err)
			}
			var mine []*matrixRow
			for _, c := range cells {
				r := &matrixRow{server: srv, c: c}
				mine = append(mine, r)
				rows = append(rows, r)
			}
			t.Run("without", func(t *testing.T) {
				for _, r := range mine {
					t.Run(r.c.name(), func(t *testing.T) {
						r.without = l.runCell(t, srv, r.c, "without")
						checkWithout(t, srv, r.c, r.without)
					})
				}
			})
			t.Run("with", func(t *testing.T) {
				d := l.startDaemon(t, srv)
				for _, r := range mine {
					t.Run(r.c.name(), func(t *testing.T) {
						r.withALG = l.runCell(t, srv, r.c, "with")
						r.ranWith = true
						checkWith(t, srv, r.c, r.withALG)
					})
				}
				l.stopDaemon(t, d)
			})
		})
	}

	flat := make([]matrixRow, len(rows))
	for i, r := range rows {
		flat[i] = *r
	}
	logMatrix(t, "matrix (expected: what the cell must do without the ALG; with the ALG every cell must work)", flat)
}

// matrixRow is one cell's results with one server.
type matrixRow struct {
	server           string
	c                cell
	without, withALG result
	ranWith          bool
}

// logMatrix logs a readable table of the rows.
func logMatrix(t *testing.T, title string, rows []matrixRow) {
	t.Helper()
	var b strings.Builder
	tw := tabwriter.NewWriter(&b, 2, 8, 2, ' ', 0)
	fmt.Fprintln(tw, "server\tcell\twithout ALG\texpected\twith ALG\tdetail")
	for _, r := range rows {
		if r.without.took == 0 && !r.ranWith {
			continue // not run (-run picked other cells)
		}
		with := "-"
		if r.ranWith {
			with = r.withALG.String()
			if !r.withALG.ok && (r.c.pinhole && !pinholesRequired() || r.c.refuses[r.server] != "") {
				with = "xfail"
			}
		}
		detail := r.withALG.detail
		if !r.ranWith || r.withALG.ok {
			detail = r.without.detail
		}
		name := r.c.name()
		if r.c.pinhole {
			name += " (pinhole)"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", r.server, name, r.without,
			r.c.expectWithout(r.server), with, detail)
	}
	tw.Flush()
	t.Logf("%s:\n%s", title, b.String())
}

// checkWith checks a cell's run with the ALG: it must work, unless the
// server refuses the mode itself (an expected failure).
func checkWith(t *testing.T, server string, c cell, r result) {
	t.Helper()
	why, refused := c.refuses[server]
	switch {
	case refused && r.ok:
		t.Errorf("XPASS with ftpalg: worked, but %s refuses this mode (%s): update the cell", server, why)
	case refused:
		t.Logf("XFAIL with ftpalg: %s (%s)", r.detail, why)
	case !r.ok:
		t.Errorf("with ftpalg: %s", r.detail)
	}
}

func checkWithout(t *testing.T, server string, c cell, r result) {
	t.Helper()
	switch c.expectWithout(server) {
	case fails:
		if r.ok {
			t.Errorf("without ALG: worked, but this cell needs the ALG (the test would prove nothing)")
		}
	case works:
		if !r.ok {
			t.Errorf("without ALG: %s (expected to work without the ALG)", r.detail)
		}
	}
}

// credentials returns the login of a server.
func credentials(server string) (user, pass string) {
	if server == "pure-ftpd" {
		return "ftptest", "ftptest" // a PureDB virtual user, see lab.sh
	}
	return "anonymous", "test@example.com"
}

// runCell runs one cell's transfers and verifies their content.
func (l *lab) runCell(t *testing.T, server string, c cell, phase string) result {
	t.Helper()
	start := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), 40*time.Second)
	defer cancel()
	base := fmt.Sprintf("%s-%s-%s", server, strings.NewReplacer("/", "_", " ", "").Replace(c.name()), phase)
	out := filepath.Join(l.dir, "out", base+".bin")
	upName := base + ".up"
	// Default active mode uploads nothing: a second data connection
	// between the same two ports would meet the first one's TIME_WAIT.
	upload := c.client != "curl" && c.mode != "DEFAULT"
	ns, host, urlHost := "c4", server46, server46
	if c.kind == k64 {
		ns, host, urlHost = "c6", server64, "["+server64+"]"
	}
	user, pass := credentials(server)

	var args []string
	switch c.client {
	case "curl":
		args = []string{"curl", "-sS", "-v", "--connect-timeout", "3", "--max-time", "15",
			"-u", user + ":" + pass, "-o", out}
		switch c.mode {
		case "PASV":
			args = append(args, "--ftp-pasv", "--disable-epsv", "--no-ftp-skip-pasv-ip")
		case "EPSV":
			args = append(args, "--ftp-pasv")
		case "PORT":
			args = append(args, "--ftp-port", "-", "--disable-eprt")
		case "EPRT 1", "EPRT 2":
			args = append(args, "--ftp-port", "-")
		}
		args = append(args, "ftp://"+urlHost+"/data.bin")
	case "lftp":
		set := []string{"debug 5", "set net:max-retries 1", "set net:timeout 3",
			"set net:reconnect-interval-base 1", "set net:reconnect-interval-max 1",
			"set ftp:ssl-allow no", "set xfer:clobber yes", "set cmd:fail-exit yes"}
		switch c.mode {
		case "PASV":
			set = append(set, "set ftp:passive-mode yes", "set ftp:prefer-epsv no")
		case "EPSV":
			set = append(set, "set ftp:passive-mode yes", "set ftp:prefer-epsv yes")
		default: // PORT, EPRT 2: lftp picks by the control connection's family
			set = append(set, "set ftp:passive-mode no")
		}
		script := strings.Join(set, "; ") +
			fmt.Sprintf("; open -u %s,%s ftp://%s; get data.bin -o %s; put %s -o upload/%s",
				user, pass, urlHost, out, filepath.Join(l.dir, "ftproot", "data.bin"), upName)
		args = []string{"lftp", "-c", script}
	case "ftplib":
		mode, extra := c.mode, []string(nil)
		switch c.mode {
		case "EPRT 2 prefix":
			mode, extra = "EPRT 2", []string{"--port-host", prefix4}
		case "PASV control":
			mode, extra = "PASV", []string{"--pasv-control"}
		case "PORT seen":
			mode, extra = "PORT", []string{"--port-host", l.client4seen}
		case "EPSV ALL":
			mode, extra = "REPLY", []string{"--cmd", "EPSV ALL", "--expect", "504"}
		case "ALGS STATUS64":
			mode, extra = "REPLY", []string{"--cmd", "ALGS STATUS64", "--expect", "216 EPSVEPRT"}
		case "EPSV 1 refused":
			mode, extra = "REPLY", []string{"--cmd", "EPSV 1", "--expect", "522"}
		}
		args = []string{"python3", filepath.Join(l.repo, "test", "lab", "ftpclient.py"), host, mode,
			"--user", user, "--password", pass, "--timeout", "3",
			"--get", "data.bin", "--out", out}
		if upload {
			args = append(args, "--put", filepath.Join(l.dir, "ftproot", "data.bin"), "--as", "upload/"+upName)
		}
		args = append(args, extra...)
	default:
		t.Fatalf("unknown client %q", c.client)
	}
	text, err := l.exec(ctx, ns, args...)
	r := result{took: time.Since(start)}
	t.Logf("%s (%v): %s\n%s", strings.Join(args, " "), r.took.Round(time.Millisecond), errText(err), quiet(text))
	if err != nil {
		r.detail = firstLine(text, err)
		return r
	}
	if c.mode == "NONE" || c.mode == "ALGS STATUS64" || c.mode == "EPSV 1 refused" || c.mode == "EPSV ALL" { // control connection only
		r.ok = true
		r.detail = firstLine(text, nil)
		return r
	}
	if got, err := fileSHA256(out); err != nil || got != l.sha {
		r.detail = fmt.Sprintf("download: sha256 %s, want %s (%v)", got, l.sha, err)
		return r
	}
	if upload {
		up := filepath.Join(l.dir, "ftproot", "upload", upName)
		if got, err := fileSHA256(up); err != nil || got != l.sha {
			r.detail = fmt.Sprintf("upload: sha256 %s, want %s (%v)", got, l.sha, err)
			return r
		}
		os.Remove(up)
	}
	os.Remove(out)
	r.ok = true
	r.detail = firstLine(text, nil)
	return r
}

func errText(err error) string {
	if err == nil {
		return "ok"
	}
	return err.Error()
}

// firstLine picks the most telling line of a client's output: on success
// the first line (ftpclient.py prints the data-channel reply there), on
// failure the last line, preceded by the last server reply when the client
// printed one elsewhere (curl -v, lftp's debug lines). On success with curl
// and lftp, the reply to the data-channel command.
func firstLine(text string, err error) string {
	lines := strings.Split(strings.TrimSpace(text), "\n")
	for i, l := range lines { // lftp's debug lines as curl -v's
		if r, ok := strings.CutPrefix(l, "---> "); ok {
			lines[i] = "> " + r
		} else if r, ok := strings.CutPrefix(l, "<--- "); ok {
			lines[i] = "< " + r
		}
	}
	if err == nil {
		// curl -v, lftp: the reply to the data-channel command.
		for i, l := range lines {
			if cmd, ok := strings.CutPrefix(l, "> "); ok && isDataCommand(cmd) {
				for _, r := range lines[i+1:] {
					if reply, ok := strings.CutPrefix(r, "< "); ok {
						return reply
					}
				}
			}
		}
		return strings.TrimSpace(lines[0])
	}
	last := strings.TrimSpace(lines[len(lines)-1])
	if last == "" {
		return err.Error()
	}
	for i := len(lines) - 1; i >= 0; i-- {
		l := strings.TrimSpace(lines[i])
		if r, ok := strings.CutPrefix(l, "< "); ok && len(r) > 3 && r[0] >= '1' && r[0] <= '5' {
			if strings.Contains(last, r) {
				break
			}
			return r + " / " + last
		}
	}
	return last
}

// quiet drops curl -v's noise (data and TLS lines, most "*" notes).
func quiet(text string) string {
	var b strings.Builder
	for _, l := range strings.Split(strings.TrimSpace(text), "\n") {
		if strings.HasPrefix(l, "{") || strings.HasPrefix(l, "}") ||
			strings.HasPrefix(l, "* ") && !strings.Contains(l, "onnect") && !strings.Contains(l, "Trying") {
			continue
		}
		b.WriteString(l)
		b.WriteByte('\n')
	}
	return strings.TrimSpace(b.String())
}

func isDataCommand(line string) bool {
	for _, c := range []string{"PASV", "EPSV", "LPSV", "PORT", "EPRT", "LPRT"} {
		if strings.HasPrefix(strings.ToUpper(line), c) {
			return true
		}
	}
	return false
}
