package events_test

import (
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
)

// infrastructure is what the pure core never imports, directly or through another
// package: the HTTP framework, the database and broker drivers, Redis, watermill.
var infrastructure = []string{
	"github.com/gin-gonic/", "github.com/jackc/pgx", "github.com/rabbitmq/amqp091-go",
	"github.com/redis/", "github.com/ThreeDotsLabs/",
}

// The pure core imports no infrastructure: the event contract (types, envelope,
// catalog, schemas, upcasters, consistency token, chain hashes), which an outside
// consumer takes as it is, with the store and relay beside it in events/eventstore; and
// the domain's decisions (command/domain: aggregates, Decide*, Evolve*, inputs and their
// validation), which the command handlers and the reactors call, with plain values.
func TestTheCoreImportsNoInfrastructure(t *testing.T) {
	for _, pkg := range []string{"github.com/chatbotsaas/chatbotd/events", "github.com/chatbotsaas/chatbotd/command/domain"} {
		out, err := exec.Command(filepath.Join(runtime.GOROOT(), "bin", "go"), "list", "-deps", pkg).CombinedOutput()
		if err != nil {
			t.Fatalf("go list -deps %s: %v\n%s", pkg, err, out)
		}
		for _, dep := range strings.Fields(string(out)) {
			for _, bad := range infrastructure {
				if strings.HasPrefix(dep, bad) {
					t.Errorf("%s depends on %s", pkg, dep)
				}
			}
		}
	}
}
