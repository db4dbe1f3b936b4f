package config

import (
	"fmt"
	"reflect"
	"strconv"
	"strings"
	"time"
)

// Defaults sets every field of spec (a pointer to a configuration struct)
// that has a default to that default, as Load would with none of the
// variables set, without reading the environment. Commands that build a
// configuration for in-process components (the demo) start from it, so
// that a CDCSYNC_ variable meant for a real deployment cannot leak in.
// Required fields and fields without a default are left as they are.
func Defaults(spec any) error {
	v := reflect.ValueOf(spec)
	if v.Kind() != reflect.Pointer || v.Elem().Kind() != reflect.Struct {
		return fmt.Errorf("config defaults: want a pointer to a struct, got %T", spec)
	}
	return setDefaults(v.Elem())
}

func setDefaults(v reflect.Value) error {
	t := v.Type()
	for i := range t.NumField() {
		f := t.Field(i)
		if !f.IsExported() || f.Tag.Get("ignored") == "true" {
			continue
		}
		fv := v.Field(i)
		if f.Type.Kind() == reflect.Struct && f.Type != durationType {
			if err := setDefaults(fv); err != nil {
				return err
			}
			continue
		}
		def, ok := f.Tag.Lookup("default")
		if !ok {
			continue
		}
		if err := setValue(fv, def); err != nil {
			return fmt.Errorf("config defaults: field %s: default %q: %w", f.Name, def, err)
		}
	}
	return nil
}

// setValue parses s into v the way envconfig does for the kinds the
// configuration structs use.
func setValue(v reflect.Value, s string) error {
	switch {
	case v.Type() == durationType:
		d, err := time.ParseDuration(s)
		if err != nil {
			return err
		}
		v.SetInt(int64(d))
	case v.Kind() == reflect.String:
		v.SetString(s)
	case v.Kind() == reflect.Bool:
		b, err := strconv.ParseBool(s)
		if err != nil {
			return err
		}
		v.SetBool(b)
	case v.Kind() >= reflect.Int && v.Kind() <= reflect.Int64:
		n, err := strconv.ParseInt(s, 0, v.Type().Bits())
		if err != nil {
			return err
		}
		v.SetInt(n)
	case v.Kind() == reflect.Slice && v.Type().Elem().Kind() == reflect.String:
		var parts []string
		if s != "" {
			parts = strings.Split(s, ",")
		}
		v.Set(reflect.ValueOf(parts).Convert(v.Type()))
	default:
		return fmt.Errorf("unsupported type %s", v.Type())
	}
	return nil
}
