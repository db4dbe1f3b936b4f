package config

import (
	"reflect"
	"testing"
)

// Defaults gives what Load gives with no variable set (the required ones
// aside), for every configuration struct.
func TestDefaultsMatchLoad(t *testing.T) {
	specs := []struct {
		name     string
		loaded   any
		defaults any
		required map[string]string
	}{
		{"capture", &Capture{}, &Capture{}, map[string]string{"CDCSYNC_SOURCE_URL": "postgres://db/orders"}},
		{"sink", &Sink{}, &Sink{}, map[string]string{"CDCSYNC_INVENTORY_URL": "postgres://db/inventory"}},
		{"dev-broker", &DevBroker{}, &DevBroker{}, nil},
		{"status", &Status{}, &Status{}, map[string]string{"CDCSYNC_SOURCE_URL": "postgres://db/orders"}},
		{"verify", &Verify{}, &Verify{}, map[string]string{"CDCSYNC_SOURCE_URL": "postgres://db/orders", "CDCSYNC_INVENTORY_URL": "postgres://db/inventory"}},
		{"demo", &Demo{}, &Demo{}, nil},
	}
	for _, s := range specs {
		isolateEnv(t, s.loaded, s.required)
		if err := Load(s.loaded); err != nil {
			t.Fatalf("%s: load: %v", s.name, err)
		}
		if err := Defaults(s.defaults); err != nil {
			t.Fatalf("%s: defaults: %v", s.name, err)
		}
		// The required values come from the environment only.
		for name, val := range s.required {
			setByVar(t, s.defaults, name, val)
		}
		if !reflect.DeepEqual(s.loaded, s.defaults) {
			t.Errorf("%s:\nLoad     %+v\nDefaults %+v", s.name, s.loaded, s.defaults)
		}
	}
}

func TestDefaultsRejectsNonPointer(t *testing.T) {
	if err := Defaults(Capture{}); err == nil {
		t.Error("Defaults accepted a struct value")
	}
}

// setByVar sets the string field read from variable name.
func setByVar(t *testing.T, spec any, name, val string) {
	t.Helper()
	v := reflect.ValueOf(spec).Elem()
	var walk func(v reflect.Value) bool
	walk = func(v reflect.Value) bool {
		for i := range v.NumField() {
			f := v.Type().Field(i)
			if f.Anonymous && f.Type.Kind() == reflect.Struct {
				if walk(v.Field(i)) {
					return true
				}
				continue
			}
			if Prefix+"_"+f.Tag.Get("envconfig") == name {
				v.Field(i).SetString(val)
				return true
			}
		}
		return false
	}
	if !walk(v) {
		t.Fatalf("no field reads %s", name)
	}
}
