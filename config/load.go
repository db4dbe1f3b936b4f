package config

import (
	"errors"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"

	"github.com/kelseyhightower/envconfig"
)

// Error is a problem with one variable. Its text is a single line naming
// the variable, e.g. `CDCSYNC_SNAPSHOT: must be one of "initial", "never", "when_needed", got
// "sometimes"`, so that a daemon can print it and exit with status 2.
type Error struct {
	Var     string
	Problem string
}

func (e *Error) Error() string {
	// Values quoted with %q cannot contain a newline; this guards the
	// one-line promise against any problem text that might.
	return e.Var + ": " + strings.ReplaceAll(e.Problem, "\n", " ")
}

func errorf(name, format string, args ...any) *Error {
	return &Error{Var: Prefix + "_" + name, Problem: fmt.Sprintf(format, args...)}
}

// Validator is implemented by the command configurations.
type Validator interface {
	Validate() error
}

// Load fills spec (a pointer to a configuration struct) from the
// environment and validates it. Every problem with a variable, including
// a missing required one or a value of the wrong type, is returned as an
// *Error.
func Load(spec any) error {
	vars := Vars(spec)
	for _, v := range vars {
		if !v.Required {
			continue
		}
		val, ok := os.LookupEnv(v.Name)
		if !ok && v.Alt != "" {
			// envconfig's own fallback to the unprefixed name.
			val, ok = os.LookupEnv(v.Alt)
		}
		if !ok || strings.TrimSpace(val) == "" {
			return &Error{Var: v.Name, Problem: "required but not set"}
		}
	}
	if err := envconfig.Process(Prefix, spec); err != nil {
		var pe *envconfig.ParseError
		if errors.As(err, &pe) {
			return &Error{Var: pe.KeyName, Problem: parseProblem(pe, vars)}
		}
		return fmt.Errorf("read environment: %w", err)
	}
	if d, ok := spec.(derivedDefaulter); ok {
		d.derivedDefaults(func(name string) bool {
			_, set := os.LookupEnv(Prefix + "_" + name)
			return set
		})
	}
	if v, ok := spec.(Validator); ok {
		return v.Validate()
	}
	return nil
}

// parseProblem rewrites an envconfig parse error ("envconfig.Process:
// assigning CDCSYNC_X to X: converting 'abc' to type time.Duration. details:
// ...") into what the user has to change.
func parseProblem(pe *envconfig.ParseError, vars []Var) string {
	var v Var
	for _, c := range vars {
		if c.Name == pe.KeyName {
			v = c
		}
	}
	got := fmt.Sprintf(", got %q", pe.Value)
	if v.Secret != "" {
		got = ""
	}
	switch {
	case errors.Is(pe.Err, strconv.ErrRange):
		return "out of range for " + pe.TypeName + got
	case v.Type == "duration":
		return "must be a duration such as 500ms, 10s or 2m" + got
	case v.Type == "integer":
		return "must be an integer" + got
	case v.Type == "bool":
		return "must be true or false" + got
	default:
		return "cannot be read as " + pe.TypeName + got
	}
}

// Unknown returns the variables in environ (os.Environ() form) that carry
// the CDCSYNC_ prefix but are not read by spec: usually a typo, or a
// variable meant for another command.
func Unknown(spec any, environ []string) []string {
	known := map[string]bool{}
	for _, v := range Vars(spec) {
		known[v.Name] = true
	}
	var out []string
	for _, kv := range environ {
		name, _, _ := strings.Cut(kv, "=")
		if strings.HasPrefix(name, Prefix+"_") && !known[name] {
			out = append(out, name)
		}
	}
	slices.Sort(out)
	return out
}

// derivedDefaulter is a spec whose defaults depend on other settings: after
// the environment is read, derivedDefaults may replace a default that isSet
// (by the variable's name without the prefix) reports as not set.
type derivedDefaulter interface {
	derivedDefaults(isSet func(name string) bool)
}
