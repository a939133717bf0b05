// Package measure is what the measuring commands (cmd/bench, cmd/chaos) share: the
// machine they ran on, and their generated block in a markdown file.
package measure

import (
	"context"
	"fmt"
	"os"
	"runtime"
	"strings"
	"time"
)

// CPUModel is the processor's model name (the architecture when unknown).
func CPUModel() string {
	b, err := os.ReadFile("/proc/cpuinfo")
	if err != nil {
		return runtime.GOARCH
	}
	for _, line := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(line, "model name") {
			if _, v, ok := strings.Cut(line, ":"); ok {
				return strings.TrimSpace(v)
			}
		}
	}
	return runtime.GOARCH
}

// MemTotal is the machine's memory, e.g. "24 GiB RAM".
func MemTotal() string {
	b, err := os.ReadFile("/proc/meminfo")
	if err != nil {
		return "unknown memory"
	}
	var kb int
	fmt.Sscanf(strings.TrimPrefix(strings.Split(string(b), "\n")[0], "MemTotal:"), "%d", &kb)
	return fmt.Sprintf("%.0f GiB RAM", float64(kb)/1024/1024)
}

// WriteBlock replaces the block that `make name` generated in the markdown file at path
// (between its markers) with body; a file without the block gets it at its end, under
// heading when there is one.
func WriteBlock(path, name, heading, body string) error {
	begin, end := "<!-- "+name+":begin (written by make "+name+") -->", "<!-- "+name+":end -->"
	old, err := os.ReadFile(path)
	if err != nil && !os.IsNotExist(err) {
		return err
	}
	s := string(old)
	i, j := strings.Index(s, begin), strings.Index(s, end)
	block := begin + "\n" + body + "\n" + end
	switch {
	case i >= 0 && j > i:
		s = s[:i] + block + s[j+len(end):]
	case heading != "":
		s = strings.TrimRight(s, "\n") + "\n\n" + heading + "\n\n" + block + "\n"
	default:
		s = strings.TrimRight(s, "\n") + "\n\n" + block + "\n"
	}
	return os.WriteFile(path, []byte(s), 0o644)
}

// Poll calls done every interval until it holds, fails, ctx ends or limit passes.
func Poll(ctx context.Context, limit, interval time.Duration, done func() (bool, error)) error {
	deadline := time.Now().Add(limit)
	for {
		ok, err := done()
		if err != nil || ok {
			return err
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("not done within %s", limit)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(interval):
		}
	}
}
