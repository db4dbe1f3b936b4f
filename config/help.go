package config

import (
	"fmt"
	"io"
	"reflect"
	"strings"
	"time"
)

// Var describes one environment variable of a configuration struct, read
// from its struct tags the way envconfig reads them.
type Var struct {
	Name     string // full name, e.g. CDCSYNC_SLOT
	Alt      string // the tag name without prefix; envconfig falls back to it when Name is unset
	Default  string
	Desc     string
	Required bool
	// Secret is "" for plain values, "url" for URLs that may hold a
	// password (shown redacted) and "true" for values never shown.
	Secret string
	Type   string // a short human name of the expected format
}

// Vars lists the variables of spec (a pointer to a struct, or a struct) in
// field order. Embedded structs flatten into their parent, as envconfig
// does; a named struct field prefixes its variables with its name.
func Vars(spec any) []Var {
	t := reflect.TypeOf(spec)
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	return appendVars(nil, Prefix, t)
}

var durationType = reflect.TypeFor[time.Duration]()

func appendVars(vars []Var, prefix string, t reflect.Type) []Var {
	for i := range t.NumField() {
		f := t.Field(i)
		if !f.IsExported() || f.Tag.Get("ignored") == "true" {
			continue
		}
		alt := strings.ToUpper(f.Tag.Get("envconfig"))
		key := alt
		if key == "" {
			key = strings.ToUpper(f.Name)
		}
		key = prefix + "_" + key
		if f.Type.Kind() == reflect.Struct && f.Type != durationType {
			inner := prefix
			if !f.Anonymous {
				inner = key
			}
			vars = appendVars(vars, inner, f.Type)
			continue
		}
		vars = append(vars, Var{
			Name:     key,
			Alt:      alt,
			Default:  f.Tag.Get("default"),
			Desc:     f.Tag.Get("desc"),
			Required: f.Tag.Get("required") == "true",
			Secret:   f.Tag.Get("secret"),
			Type:     typeName(f.Type),
		})
	}
	return vars
}

func typeName(t reflect.Type) string {
	switch {
	case t == durationType:
		return "duration"
	case t.Kind() == reflect.Slice:
		return "list"
	case t.Kind() == reflect.Bool:
		return "bool"
	case t.Kind() >= reflect.Int && t.Kind() <= reflect.Int64:
		return "integer"
	case t.Kind() >= reflect.Uint && t.Kind() <= reflect.Uint64:
		return "integer"
	default:
		return "string"
	}
}

// ShownValue is how a variable's current value may be displayed: secrets
// are never shown, URLs are shown with their password redacted.
func (v Var) ShownValue(value string) string {
	switch v.Secret {
	case "":
		return value
	case "url":
		return RedactURL(value)
	default:
		return "(set, hidden)"
	}
}

// WriteHelp writes one entry per variable of spec: name, format, default or
// "(required)", description, and the current value when lookup finds one.
// lookup is usually os.LookupEnv; pass nil to leave current values out.
func WriteHelp(w io.Writer, spec any, lookup func(string) (string, bool)) error {
	for _, v := range Vars(spec) {
		head := "  " + v.Name + "  " + v.Type
		switch {
		case v.Required:
			head += "  (required)"
		case v.Default != "":
			head += "  default: " + v.Default
		default:
			head += "  default: (empty)"
		}
		if _, err := fmt.Fprintln(w, head); err != nil {
			return err
		}
		if _, err := fmt.Fprintf(w, "      %s\n", v.Desc); err != nil {
			return err
		}
		if lookup == nil {
			continue
		}
		if cur, ok := lookup(v.Name); ok {
			if _, err := fmt.Fprintf(w, "      current: %s\n", v.ShownValue(cur)); err != nil {
				return err
			}
		}
	}
	return nil
}

// WriteMarkdown writes the variables of spec as a Markdown table (for the
// README, which a test keeps in step with the structs).
func WriteMarkdown(w io.Writer, spec any) error {
	if _, err := fmt.Fprintln(w, "| variable | default | description |\n|---|---|---|"); err != nil {
		return err
	}
	for _, v := range Vars(spec) {
		def := "`" + v.Default + "`"
		switch {
		case v.Required:
			def = "required"
		case v.Default == "":
			def = "—"
		}
		desc := strings.ReplaceAll(v.Desc, "|", `\|`)
		desc = strings.ReplaceAll(desc, "<", "&lt;")
		desc = strings.ReplaceAll(desc, ">", "&gt;")
		if _, err := fmt.Fprintf(w, "| `%s` | %s | %s |\n", v.Name, def, desc); err != nil {
			return err
		}
	}
	return nil
}
