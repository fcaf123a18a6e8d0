package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"strconv"
	"strings"

	"github.com/peterbourgon/ff/v3"
)

// The command line's conventions, the same for every subcommand:
//   - flags are spelled --flag in help texts (the flag package accepts
//     both -flag and --flag);
//   - --help (-h) prints the help on standard output, once, exit status 0;
//   - a bad flag or value prints one line naming the flag and a pointer to
//     --help on standard error, exit status 2;
//   - every help text ends with the subcommand's exit statuses.

// cmdFlags is a subcommand's flag set with its help text.
type cmdFlags struct {
	*flag.FlagSet
	name string // "run", "rules", ...
	head string // the help text before the flags
	tail string // the help text after the flags (exit statuses)
	errs *valueErr
	// configIgnoresUnknown: the --config file may hold keys this command
	// has no flag for (rules reads the daemon's file).
	configIgnoresUnknown bool
}

// valueErr is the last error a flag's Set returned, with its flag: the
// flag package's own message spells the flag "-name" and is long.
type valueErr struct {
	name, value string
	err         error
}

// newCmdFlags returns an empty flag set for subcommand name.
func newCmdFlags(name, head, tail string) *cmdFlags {
	fs := flag.NewFlagSet("ftpalg "+name, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.Usage = func() {}
	return &cmdFlags{FlagSet: fs, name: name, head: head, tail: tail, errs: &valueErr{}}
}

// checkedValue records the error of Set; boolValue does the same for
// boolean flags (which the flag package recognises by IsBoolFlag).
type checkedValue struct {
	flag.Value
	name string
	errs *valueErr
}

func (v *checkedValue) Set(s string) error {
	err := v.Value.Set(s)
	if err != nil {
		var ne *strconv.NumError
		// The flag package's own values say "parse error" or "value out of
		// range" for a bad number or duration.
		if errors.As(err, &ne) || err.Error() == "parse error" || err.Error() == "value out of range" {
			err = fmt.Errorf("bad value %q", s)
		}
		*v.errs = valueErr{name: v.name, value: s, err: err}
	}
	return err
}

type boolValue struct{ checkedValue }

func (v *boolValue) IsBoolFlag() bool { return true }

func (v *boolValue) Set(s string) error {
	if _, err := strconv.ParseBool(s); err != nil {
		err = fmt.Errorf("bad value %q (want true or false)", s)
		*v.errs = valueErr{name: v.name, value: s, err: err}
		return err
	}
	return v.checkedValue.Set(s)
}

// wrap puts every flag's value in a checkedValue (once, before parsing).
func (c *cmdFlags) wrap() {
	c.VisitAll(func(f *flag.Flag) {
		switch f.Value.(type) {
		case *checkedValue, *boolValue:
			return
		}
		cv := checkedValue{Value: f.Value, name: f.Name, errs: c.errs}
		if b, ok := f.Value.(interface{ IsBoolFlag() bool }); ok && b.IsBoolFlag() {
			f.Value = &boolValue{cv}
		} else {
			f.Value = &cv
		}
	})
}

// errHelp is returned by parse after it printed the help.
var errHelp = flag.ErrHelp

// usageError is a bad flag, value or argument: one line, without the
// "ftpalg NAME: " prefix.
type usageError struct{ msg string }

func (e *usageError) Error() string { return e.msg }

// usagef returns a usageError.
func usagef(format string, a ...any) error {
	return &usageError{msg: fmt.Sprintf(format, a...)}
}

// parse parses args (and, if the set has a --config flag, the config file
// it names: keys are the flag names, "key value" per line, flags on the
// command line win). On --help it prints the help to stdout and returns
// errHelp; a bad flag or value is a *usageError.
func (c *cmdFlags) parse(args []string, stdout io.Writer) error {
	c.wrap()
	*c.errs = valueErr{}
	var opts []ff.Option
	if c.Lookup("config") != nil {
		opts = append(opts, ff.WithConfigFileFlag("config"), ff.WithConfigFileParser(ff.PlainParser),
			ff.WithIgnoreUndefined(c.configIgnoresUnknown))
	}
	err := ff.Parse(c.FlagSet, args, opts...)
	if err == nil {
		return nil
	}
	if errors.Is(err, flag.ErrHelp) {
		c.printHelp(stdout)
		return errHelp
	}
	return &usageError{msg: c.describe(err)}
}

// describe turns a parse error into the one line after "ftpalg NAME: ".
func (c *cmdFlags) describe(err error) string {
	msg := err.Error()
	fromArgs := strings.HasPrefix(msg, "error parsing commandline arguments")
	where := ""
	if !fromArgs {
		where = "--config " + c.Lookup("config").Value.String() + ": "
	}
	if e := c.errs; e.err != nil {
		if fromArgs {
			return fmt.Sprintf("--%s: %v", e.name, e.err)
		}
		return fmt.Sprintf("%s%s: %v", where, e.name, e.err)
	}
	for _, p := range []struct{ prefix, format string }{
		{"flag provided but not defined: -", "unknown flag --%s"},
		{"flag needs an argument: -", "--%s needs a value"},
		{`config file flag "`, "unknown key %s"},
	} {
		if _, rest, ok := strings.Cut(msg, p.prefix); ok {
			rest = strings.TrimSuffix(strings.SplitN(rest, `" not defined`, 2)[0], `"`)
			return where + fmt.Sprintf(p.format, rest)
		}
	}
	if fromArgs {
		return strings.TrimPrefix(msg, "error parsing commandline arguments: ")
	}
	return where + strings.TrimPrefix(msg, "open "+c.Lookup("config").Value.String()+": ")
}

// usageExit prints what an error of parse (or of the checks after it)
// asks for and returns the exit status: 0 after the help, 2 after a usage
// error (one line and a pointer to --help on stderr); -1 for any other
// error, which the caller reports. cmd is "run", "rules install", ...
func usageExit(cmd string, err error, stderr io.Writer) int {
	var ue *usageError
	switch {
	case errors.Is(err, errHelp):
		return 0
	case errors.As(err, &ue):
		first, _, _ := strings.Cut(cmd, " ")
		fmt.Fprintf(stderr, "ftpalg %s: %s\nRun 'ftpalg %s --help' for usage.\n", cmd, ue.msg, first)
		return 2
	}
	return -1
}

// printHelp writes the help text: head, the flags (sorted, spelled --flag,
// with their defaults), tail.
func (c *cmdFlags) printHelp(w io.Writer) {
	fmt.Fprint(w, c.head)
	fmt.Fprint(w, "\nFlags:\n")
	c.VisitAll(func(f *flag.Flag) {
		name, usage := flag.UnquoteUsage(f)
		line := "  --" + f.Name
		if name != "" {
			line += " " + name
		}
		fmt.Fprintln(w, line)
		usage = strings.ReplaceAll(usage, "\n", "\n      ")
		if isZeroDefault(f) {
			fmt.Fprintf(w, "      %s\n", usage)
		} else {
			fmt.Fprintf(w, "      %s (default %s)\n", usage, f.DefValue)
		}
	})
	if c.tail != "" {
		fmt.Fprint(w, "\n"+c.tail)
	}
}

func isZeroDefault(f *flag.Flag) bool {
	switch f.DefValue {
	case "", "0", "false", "0s", "[]":
		return true
	}
	return false
}

// exitStatus is the usual exit status section of a help text.
func exitStatus(one string) string {
	return "Exit status:\n  0  success\n  1  " + one + "\n  2  usage error (a bad flag, value or argument)\n"
}
