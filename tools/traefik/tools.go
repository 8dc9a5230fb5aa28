//go:build tools

// Package tools keeps Traefik's command in this module's requirements (go mod tidy), so
// `go build github.com/traefik/traefik/v3/cmd/traefik` here uses exactly go.sum's versions.
package tools

import _ "github.com/traefik/traefik/v3/cmd/traefik"
