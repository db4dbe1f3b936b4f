package main

import (
	"errors"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"

	"github.com/cdcsync/cdcsync/config"
)

const deployDir = "../../deploy"

// yamlDoc is one YAML document of a file under deploy/.
type yamlDoc struct {
	path string
	doc  map[string]any
}

func deployDocs(t *testing.T) []yamlDoc {
	t.Helper()
	var docs []yamlDoc
	err := filepath.WalkDir(deployDir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		if ext := filepath.Ext(path); ext != ".yaml" && ext != ".yml" {
			return nil
		}
		f, err := os.Open(path)
		if err != nil {
			return err
		}
		defer f.Close()
		dec := yaml.NewDecoder(f)
		for {
			var doc map[string]any
			err := dec.Decode(&doc)
			if errors.Is(err, io.EOF) {
				return nil
			}
			if err != nil {
				t.Errorf("%s: %v", path, err)
				return nil
			}
			if doc != nil {
				docs = append(docs, yamlDoc{path: path, doc: doc})
			}
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(docs) == 0 {
		t.Fatal("no YAML under deploy/")
	}
	return docs
}

// commandVars maps each command with a configuration to the variables it
// reads.
func commandVars() map[string][]string {
	out := map[string][]string{}
	for _, c := range commands() {
		if c.Config == nil {
			continue
		}
		for _, v := range config.Vars(c.Config()) {
			out[c.Name] = append(out[c.Name], v.Name)
		}
	}
	return out
}

// collectNames finds every CDCSYNC_ variable named anywhere in a YAML
// tree: map keys (compose environment maps, ConfigMap data) and strings
// (env[].name, "NAME=value" list entries).
func collectNames(node any, out map[string]bool) {
	switch n := node.(type) {
	case map[string]any:
		for k, v := range n {
			if strings.HasPrefix(k, config.Prefix+"_") {
				out[k] = true
			}
			collectNames(v, out)
		}
	case []any:
		for _, v := range n {
			collectNames(v, out)
		}
	case string:
		name, _, _ := strings.Cut(n, "=")
		if strings.HasPrefix(name, config.Prefix+"_") && !strings.ContainsAny(name, " /:") {
			out[name] = true
		}
	}
}

// Every CDCSYNC_ variable that a manifest or compose file sets exists.
func TestDeployVariablesExist(t *testing.T) {
	known := map[string]bool{}
	for _, vars := range commandVars() {
		for _, v := range vars {
			known[v] = true
		}
	}
	for _, d := range deployDocs(t) {
		names := map[string]bool{}
		collectNames(d.doc, names)
		for n := range names {
			if !known[n] {
				t.Errorf("%s sets %s, which no command reads", d.path, n)
			}
		}
	}
}

// Each process gets exactly variables its command reads, and every
// required one; secret and ConfigMap references resolve.
func TestDeployProcessesAreConfigured(t *testing.T) {
	byCommand := commandVars()
	docs := deployDocs(t)
	checked := 0
	check := func(where, cmd string, env []string) {
		vars, ok := byCommand[cmd]
		if !ok {
			return // not a configured command (help, healthcheck)
		}
		checked++
		for _, n := range env {
			if !slices.Contains(vars, n) {
				t.Errorf("%s: `cdcsync %s` does not read %s", where, cmd, n)
			}
		}
		for _, c := range commands() {
			if c.Name != cmd {
				continue
			}
			for _, v := range config.Vars(c.Config()) {
				if v.Required && !slices.Contains(env, v.Name) {
					t.Errorf("%s: `cdcsync %s` needs %s", where, cmd, v.Name)
				}
			}
		}
	}

	find := func(kind, name string) map[string]any {
		for _, d := range docs {
			if d.doc["kind"] == kind && dig(d.doc, "metadata", "name") == name {
				return d.doc
			}
		}
		return nil
	}

	for _, d := range docs {
		// docker compose: services.<name>.command[0] and environment.
		if services, ok := d.doc["services"].(map[string]any); ok {
			for name, s := range services {
				svc, _ := s.(map[string]any)
				cmd := first(svc["command"])
				var env []string
				switch e := svc["environment"].(type) {
				case map[string]any:
					for k := range e {
						env = append(env, k)
					}
				case []any:
					for _, kv := range e {
						k, _, _ := strings.Cut(kv.(string), "=")
						env = append(env, k)
					}
				}
				if byCommand[cmd] != nil {
					check(d.path+" service "+name, cmd, filterPrefixed(env))
				}
			}
		}
		// Kubernetes: Deployment containers, args[0], env and envFrom.
		if d.doc["kind"] != "Deployment" {
			continue
		}
		containers, _ := dig(d.doc, "spec", "template", "spec", "containers").([]any)
		for _, c := range containers {
			ctr := c.(map[string]any)
			where := d.path + " container " + ctr["name"].(string)
			var env []string
			envList, _ := ctr["env"].([]any)
			for _, e := range envList {
				ev := e.(map[string]any)
				env = append(env, ev["name"].(string))
				if ref, ok := dig(ev, "valueFrom", "secretKeyRef").(map[string]any); ok {
					secret := find("Secret", ref["name"].(string))
					if secret == nil {
						t.Errorf("%s: Secret %v not defined", where, ref["name"])
					} else if dig(secret, "stringData", ref["key"].(string)) == nil && dig(secret, "data", ref["key"].(string)) == nil {
						t.Errorf("%s: Secret %v has no key %v", where, ref["name"], ref["key"])
					}
				}
			}
			envFrom, _ := ctr["envFrom"].([]any)
			for _, e := range envFrom {
				name, ok := dig(e, "configMapRef", "name").(string)
				if !ok {
					continue
				}
				cm := find("ConfigMap", name)
				if cm == nil {
					t.Errorf("%s: ConfigMap %s not defined", where, name)
					continue
				}
				data, _ := cm["data"].(map[string]any)
				for k := range data {
					env = append(env, k)
				}
			}
			check(where, first(ctr["args"]), filterPrefixed(env))
		}
	}
	if checked < 4 {
		t.Errorf("checked %d capture/sink processes in deploy/, want compose and Kubernetes for both", checked)
	}
}

func dig(node any, path ...string) any {
	for _, p := range path {
		m, ok := node.(map[string]any)
		if !ok {
			return nil
		}
		node = m[p]
	}
	return node
}

func first(v any) string {
	if l, ok := v.([]any); ok && len(l) > 0 {
		s, _ := l[0].(string)
		return s
	}
	return ""
}

func filterPrefixed(names []string) []string {
	var out []string
	for _, n := range names {
		if strings.HasPrefix(n, config.Prefix+"_") {
			out = append(out, n)
		}
	}
	return out
}
