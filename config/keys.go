package config

import (
	"fmt"
	"reflect"
	"strconv"
	"strings"
	"time"
)

// Key describes one configuration key: its dotted name, the type an operator
// writes (for messages), and whether a SIGHUP applies it without a restart.
// Keys are read from Config's fields and tags, so the struct is the one
// place a key is declared.
type Key struct {
	Name  string
	Live  bool
	kind  string
	index []int // the field's path in Config (reflect.Value.FieldByIndex)
}

// Keys is every key of the file, in the order of Config's fields (tables,
// then keys in each table). A test checks that config.toml documents each
// of them, with [live] marks matching Live.
var Keys = keysOf(reflect.TypeFor[Config](), Default())

var durationType = reflect.TypeFor[Duration]()

// keysOf lists the keys of the tables of t (Config): every exported field of
// every exported table. A field without a valid reload tag is a mistake in
// this package: keysOf panics, so every test (and the daemon, at start)
// fails at once, naming the field.
func keysOf(t reflect.Type, def *Config) []Key {
	var keys []Key
	for _, table := range reflect.VisibleFields(t) {
		if !table.IsExported() {
			continue
		}
		tname := tomlName(table)
		for _, f := range reflect.VisibleFields(table.Type) {
			if !f.IsExported() {
				continue
			}
			k := Key{Name: tname + "." + tomlName(f), index: []int{table.Index[0], f.Index[0]}}
			switch f.Tag.Get("reload") {
			case "live":
				k.Live = true
			case "restart":
			default:
				panic(fmt.Sprintf("config: field %s.%s (%s) needs a tag reload:\"live\" or reload:\"restart\"", table.Name, f.Name, k.Name))
			}
			k.kind = kindOf(f, k.value(def))
			keys = append(keys, k)
		}
	}
	return keys
}

func tomlName(f reflect.StructField) string {
	name, _, _ := strings.Cut(f.Tag.Get("toml"), ",")
	if name == "" {
		panic(fmt.Sprintf("config: field %s has no toml tag", f.Name))
	}
	return name
}

// kindOf is what a message says the key wants: from the field's type, its
// default (a duration's example) and its note tag.
func kindOf(f reflect.StructField, def reflect.Value) string {
	var kind string
	switch {
	case f.Type == durationType:
		kind = fmt.Sprintf("a duration string such as %q", shortDuration(def.Interface().(Duration).Duration))
	case f.Type.Kind() == reflect.Bool:
		kind = "a boolean"
	case f.Type.Kind() == reflect.Interface:
		// A key of more than one TOML type (backend.devices): its note
		// says which.
		kind = "a value"
	case f.Type.Kind() == reflect.String:
		kind = "a string"
	case reflect.Zero(f.Type).CanInt():
		kind = "an integer"
	case reflect.Zero(f.Type).CanUint():
		kind = "a non-negative integer"
	default:
		panic(fmt.Sprintf("config: field %s has type %s, which keys.go does not describe", f.Name, f.Type))
	}
	if note := f.Tag.Get("note"); note != "" {
		kind += " (" + note + ")"
	}
	return kind
}

// shortDuration writes d as an operator would: "2h", "2m", "1m30s",
// "250ms", not time.Duration's "2h0m0s".
func shortDuration(d time.Duration) string {
	s := d.String()
	if strings.HasSuffix(s, "m0s") {
		s = strings.TrimSuffix(s, "0s")
	}
	if strings.HasSuffix(s, "h0m") {
		s = strings.TrimSuffix(s, "0m")
	}
	return s
}

// value is the key's field in c.
func (k Key) value(c *Config) reflect.Value { return reflect.ValueOf(c).Elem().FieldByIndex(k.index) }

// get is the key's value as text, for diffs and messages: a duration as
// time.Duration writes it, every other value as fmt does.
func (k Key) get(c *Config) string { return fmt.Sprint(k.value(c).Interface()) }

// copy sets the key in dst to its value in src.
func (k Key) copy(dst, src *Config) { k.value(dst).Set(k.value(src)) }

func keyByName(name string) (Key, bool) {
	for _, k := range Keys {
		if k.Name == name {
			return k, true
		}
	}
	return Key{}, false
}

func (c *Config) lookup(name string) (string, bool) {
	if k, ok := keyByName(name); ok {
		return strconv.Quote(k.get(c)), true
	}
	return "", false
}

// Change is one key whose value differs between two configurations.
type Change struct {
	Key      string
	Old, New string
	Live     bool // applied by a reload; false: needs a restart
}

// Diff lists the keys whose values differ from old to c, in Keys order.
func (c *Config) Diff(old *Config) []Change {
	var out []Change
	for _, k := range Keys {
		o, n := k.get(old), k.get(c)
		if o != n {
			out = append(out, Change{Key: k.Name, Old: o, New: n, Live: k.Live})
		}
	}
	return out
}

// WithLive is the configuration a reload runs with: c (the running one) with
// every live key taken from next, and every restart-only key kept, so the
// process never believes it runs with a spool root or model it has not
// opened. Positions come from next, the file now on disk.
func (c *Config) WithLive(next *Config) *Config {
	out := *c
	for _, k := range Keys {
		if k.Live {
			k.copy(&out, next)
		}
	}
	out.path, out.positions = next.path, next.positions
	return &out
}
