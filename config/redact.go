package config

import (
	"net/url"
	"regexp"
	"strings"
)

// redacted replaces a password wherever one is shown.
const redacted = "xxxxx"

// secretParams are query parameters (URL form) and keywords (key=value
// form) of Postgres and Redis connection strings that carry a secret.
var secretParams = []string{"password", "sslpassword", "pass"}

// dsnSecret matches password=... in a key=value connection string, where a
// value is either single-quoted (with backslash escapes) or runs to the
// next space.
var dsnSecret = regexp.MustCompile(`(?i)\b(password|sslpassword)(\s*=\s*)('(?:\\.|[^'\\])*'?|\S*)`)

// redactQuery replaces the values of secret parameters in a raw query,
// leaving every other byte as it was (url.Values would drop malformed
// pairs and reorder the rest).
func redactQuery(raw string) string {
	if raw == "" {
		return raw
	}
	pairs := strings.Split(raw, "&")
	for i, p := range pairs {
		k, _, _ := strings.Cut(p, "=")
		if dk, err := url.QueryUnescape(k); err == nil {
			k = dk
		}
		for _, s := range secretParams {
			if strings.EqualFold(k, s) {
				pairs[i] = s + "=" + redacted
			}
		}
	}
	return strings.Join(pairs, "&")
}

// RedactURL returns a connection string safe to log: the password of a
// postgres://, redis:// or rediss:// URL (user info or password query
// parameter) or of a key=value DSN (`password=...`) is replaced by xxxxx.
// Strings that cannot be parsed are redacted conservatively: everything
// between the user name and the last '@' goes.
func RedactURL(s string) string {
	scheme, rest, isURL := strings.Cut(s, "://")
	if !isURL {
		return dsnSecret.ReplaceAllString(s, "${1}${2}"+redacted)
	}
	if u, err := url.Parse(s); err == nil && u.Opaque == "" {
		if _, has := u.User.Password(); has {
			u.User = url.UserPassword(u.User.Username(), redacted)
		}
		u.RawQuery = redactQuery(u.RawQuery)
		return u.String()
	}
	// Unparseable, e.g. an unescaped '#' or '/' in the password. Assume
	// the user info ends at the last '@' (which is how url.Parse reads it
	// too) and keep only the user name. A query string is dropped because
	// it may hold a password as well.
	if at := strings.LastIndex(rest, "@"); at >= 0 {
		user, _, _ := strings.Cut(rest[:at], ":")
		rest = user + ":" + redacted + rest[at:]
	}
	if q := strings.IndexByte(rest, '?'); q >= 0 {
		rest = rest[:q] + "?" + redacted
	}
	return scheme + "://" + rest
}
