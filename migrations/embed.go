// Package migrations holds the numbered SQL migrations, embedded in the binary and
// applied by goose (`chatbotd migrate`, and on `serve` start).
package migrations

import "embed"

// FS is every migration file.
//
//go:embed *.sql
var FS embed.FS
