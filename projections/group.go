package projections

import (
	"context"
	"errors"
	"slices"

	"github.com/jackc/pgx/v5"

	"github.com/chatbotsaas/chatbotd/events"
)

// GroupName names the group of every projector that serving runs (see Group): its queue,
// its layout and its dead-letter queue for messages that no member could take. A
// constant: a new name is a new queue.
const GroupName = "projections"

// Group is projectors that share one queue, and each batch's transaction. The broker
// writes an event once, to the group's queue, however many of its members it concerns,
// and the runtime applies a batch's share of every member in one transaction, where a
// queue per projector cost a quorum-queue write, a delivery and a transaction per
// projector for each event (BENCHMARKS.md: "One queue for the projectors").
//
// Each member keeps what makes it a projector of its own: its bindings (its share of a
// batch), its stream versions and position (its name in projection_streams and
// projection_positions), its rebuild and its live lock, its dead-letter queue, its
// after-commit work. A failed batch is applied again member by member, so that one
// member's poison event is dead-lettered for that member alone.
type Group struct {
	name string
	// members are applied in this order in every instance of the group: one lock order.
	members []Projector
	match   []func(eventType string) bool
}

// NewGroup returns the group of members named name.
func NewGroup(name string, members ...Projector) *Group {
	g := &Group{name: name, members: members}
	for _, m := range members {
		g.match = append(g.match, events.TopicMatcher(m.Bindings()))
	}
	return g
}

// Name is the group's name.
func (g *Group) Name() string { return g.name }

// Bindings are every member's bindings, each once.
func (g *Group) Bindings() []string {
	var out []string
	for _, m := range g.members {
		for _, b := range m.Bindings() {
			if !slices.Contains(out, b) {
				out = append(out, b)
			}
		}
	}
	return out
}

var errGroupApply = errors.New("projections: a group is applied through its members")

// Apply is never called: the runtime applies each member's share (Runner.shares).
func (g *Group) Apply(context.Context, pgx.Tx, events.Envelope) error { return errGroupApply }
