package projections

import (
	"log/slog"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/chatbotsaas/chatbotd/events"
	"github.com/chatbotsaas/chatbotd/events/eventstore"
	"github.com/chatbotsaas/chatbotd/internal/cache"
	"github.com/chatbotsaas/chatbotd/projections/reactors"
)

// Deps are what the registry's parts are built with. A part that needs none of them
// (a rebuild, a test) may be built with the zero Deps.
type Deps struct {
	Pool   *pgxpool.Pool
	Cache  *cache.Cache
	Store  *eventstore.Store
	Logger *slog.Logger
}

// Part is one consumer of the event stream. Every part is named once, in Parts: serving
// builds and runs them from it, the operators' commands rebuild and verify the
// rebuildable ones, status and metrics list them all, consistency waits learn from it
// which projection applies each stream type, and the tests read their queues from it.
// Names are queue names: never rename one (a rename re-consumes everything).
type Part struct {
	Name string
	// Reactor marks a part that changes the world or appends events (it answers
	// messages, trains, calls out): it is never replayed. Every other part is a
	// projector: it folds events into tables only.
	Reactor bool
	// Rebuildable parts can be replayed from the log into fresh tables and swapped in
	// (`chatbotd projections rebuild NAME`); their projector implements Rebuildable.
	Rebuildable bool
	// Streams are the stream types whose consistency tokens wait for this part (a read
	// of what a command wrote to such a stream waits until this part has applied it).
	Streams []string
	// Projector builds the part's projector, run by the projector runtime (Runner). Nil
	// for a part with a runtime of its own (the webhook responder, a watermill consumer),
	// which then names its Bindings here.
	Projector func(Deps) Projector
	Bindings  []string
}

// Parts lists every consumer of the event stream. Adding one is one file (its
// projector), one entry here, and one migration (its tables).
func Parts() []Part {
	named := func(d Deps, name string) *slog.Logger {
		if d.Logger == nil {
			return nil
		}
		return d.Logger.With("projector", name)
	}
	return []Part{
		{Name: AccountsName, Rebuildable: true,
			Streams:   []string{events.StreamOrganization, events.StreamUser, events.StreamSession, events.StreamToken, events.StreamRole},
			Projector: func(d Deps) Projector { return NewAccounts(d.Pool, d.Cache, named(d, AccountsName)) }},
		{Name: ChatbotsName, Rebuildable: true, Streams: []string{events.StreamChatbot, events.StreamKnowledge, events.StreamTraining},
			Projector: func(Deps) Projector { return Chatbots{} }},
		{Name: reactors.TrainerName, Reactor: true, Projector: func(d Deps) Projector { return reactors.Trainer{Store: d.Store} }},
		{Name: ConversationsName, Rebuildable: true, Streams: []string{events.StreamConversation, events.StreamMessage},
			Projector: func(Deps) Projector { return Conversations{} }},
		{Name: reactors.ResponderName, Reactor: true, Projector: func(d Deps) Projector { return reactors.Responder{Store: d.Store} }},
		{Name: AuditName, Rebuildable: true, Projector: func(Deps) Projector { return Audit{} }},
		{Name: AnalyticsName, Rebuildable: true, Projector: func(Deps) Projector { return Analytics{} }},
		{Name: WebhooksName, Streams: []string{events.StreamWebhook}, Projector: func(Deps) Projector { return Webhooks{} }},
		{Name: NotificationsName, Projector: func(Deps) Projector { return Notifications{} }},
		{Name: reactors.WebhookResponderName, Reactor: true, Bindings: []string{"message.posted"}},
	}
}

// Grouped reports whether the part is a member of the group (GroupName) that serving
// runs on one queue: every projector on the projector runtime. Reactors keep queues of
// their own: they call out, and a slow call must not hold the read models back.
func (p Part) Grouped() bool { return !p.Reactor && p.Projector != nil }

// NewProjectorGroup builds the group of every Grouped part's projector, in the registry's
// order.
func NewProjectorGroup(d Deps) *Group {
	var members []Projector
	for _, p := range Parts() {
		if p.Grouped() {
			members = append(members, p.Projector(d))
		}
	}
	return NewGroup(GroupName, members...)
}

// Rebuildables builds every rebuildable part's projector.
func Rebuildables(d Deps) []Rebuildable {
	var out []Rebuildable
	for _, p := range Parts() {
		if p.Rebuildable {
			out = append(out, p.Projector(d).(Rebuildable))
		}
	}
	return out
}

// WaitsFor maps each stream type to the projection its consistency tokens wait for.
func WaitsFor() map[string]string {
	out := map[string]string{}
	for _, p := range Parts() {
		for _, s := range p.Streams {
			out[s] = p.Name
		}
	}
	return out
}
