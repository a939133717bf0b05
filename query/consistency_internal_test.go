package query

import (
	"context"
	"net/http"
	"net/http/httptest"
	"regexp"
	"testing"
	"time"

	"github.com/gin-gonic/gin"
	"github.com/google/uuid"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/chatbotsaas/chatbotd/events"
	"github.com/chatbotsaas/chatbotd/events/eventstore"
	"github.com/chatbotsaas/chatbotd/internal/auth"
	"github.com/chatbotsaas/chatbotd/internal/readmodel"
	"github.com/chatbotsaas/chatbotd/internal/testenv"
)

// At most maxWaits reads wait for a consistency token at once in one process: while
// every turn is taken, a read answers at its deadline without looking at the read
// model, and as soon as a turn frees it waits (and here finds its write applied).
func TestConsistencyWaitsAreBoundedPerProcess(t *testing.T) {
	ctx := context.Background()
	d := testenv.MustDatabase(t)
	org, bot := uuid.New(), uuid.New()
	tok, err := eventstore.NewStore(d.Pool).Append(ctx, eventstore.AppendRequest{StreamType: events.StreamChatbot, StreamID: bot,
		ExpectedVersion: 0, OrganizationID: &org, Meta: events.Meta{Actor: events.Actor{Type: events.ActorSystem}},
		Events: []events.Event{events.ChatbotCreated{Name: "Bot", Responder: events.Responder{Type: "knowledge_base"}}}})
	require.NoError(t, err)
	_, err = d.Pool.Exec(ctx, `INSERT INTO projection_streams (projection, stream_id, version) VALUES ($1, $2, 1)`,
		readmodel.ChatbotsProjection, bot)
	require.NoError(t, err)

	h := NewHTTP(d.Pool, d.Pool, nil, nil, nil, nil, map[string]string{events.StreamChatbot: readmodel.ChatbotsProjection})
	h.consistencyWait = 300 * time.Millisecond
	read := func(principal auth.Principal) *httptest.ResponseRecorder { return readWithToken(h, tok, principal) }
	mine := auth.Principal{OrganizationID: org}
	assert.Empty(t, read(mine).Header().Get("X-Consistency"), "a free turn: the wait finds the write applied")

	for range maxWaits {
		h.waits <- struct{}{}
	}
	// The stream's owner is known now: the read looks at the projection only in its wait.
	assert.Equal(t, "timeout", read(mine).Header().Get("X-Consistency"), "no turn: no wait, however applied the write")
	done := make(chan *httptest.ResponseRecorder)
	go func() { done <- read(mine) }()
	<-h.waits // a turn frees while the read waits for one
	assert.Empty(t, (<-done).Header().Get("X-Consistency"))

	other := read(auth.Principal{OrganizationID: uuid.New()})
	assert.Equal(t, http.StatusBadRequest, other.Code, "another organization's write")
}

// Where the read models are on the primary, a read with a token whose write is applied
// costs one round trip before the handler's: the stream's owner and the projection's
// version in one statement. With a replica (another database to read), the projection is
// looked at where the read reads, after the owner: two. A write not applied yet is waited
// for either way, and another organization's stream is refused whatever the projection
// has applied of it.
func TestConsistencyLooksOnceWhereTheReadModelsAreOnThePrimary(t *testing.T) {
	ctx := context.Background()
	d := testenv.MustDatabase(t)
	org := uuid.New()
	store := eventstore.NewStore(d.Pool)
	write := func(applied bool) events.AppendResult {
		bot := uuid.New()
		tok, err := store.Append(ctx, eventstore.AppendRequest{StreamType: events.StreamChatbot, StreamID: bot,
			ExpectedVersion: 0, OrganizationID: &org, Meta: events.Meta{Actor: events.Actor{Type: events.ActorSystem}},
			Events: []events.Event{events.ChatbotCreated{Name: "Bot", Responder: events.Responder{Type: "knowledge_base"}}}})
		require.NoError(t, err)
		if applied {
			_, err = d.Pool.Exec(ctx, `INSERT INTO projection_streams (projection, stream_id, version) VALUES ($1, $2, 1)`,
				readmodel.ChatbotsProjection, bot)
			require.NoError(t, err)
		}
		return tok
	}
	primary, traced := testenv.MustTracedPool(t, d.URL)
	replica, tracedReplica := testenv.MustTracedPool(t, d.URL+"&application_name=replica")
	waitsFor := map[string]string{events.StreamChatbot: readmodel.ChatbotsProjection}
	read := func(h *HTTP, tok events.AppendResult, p auth.Principal) *httptest.ResponseRecorder {
		traced.Reset()
		tracedReplica.Reset()
		return readWithToken(h, tok, p)
	}
	roundTrips := func(s *testenv.Statements) int {
		alone, batches := s.RoundTrips()
		return len(alone) + len(batches)
	}
	mine := auth.Principal{OrganizationID: org}

	onPrimary := NewHTTP(primary, primary, nil, nil, nil, nil, waitsFor)
	require.True(t, onPrimary.readsPrimary)
	got := read(onPrimary, write(true), mine)
	assert.Empty(t, got.Header().Get("X-Consistency"))
	assert.Equal(t, 1, roundTrips(traced), "%q", traced.All())

	other := read(onPrimary, write(true), auth.Principal{OrganizationID: uuid.New()})
	assert.Equal(t, http.StatusBadRequest, other.Code, "another organization's write")
	assert.Equal(t, 1, roundTrips(traced), "%q", traced.All())

	onPrimary.consistencyWait = 200 * time.Millisecond
	pending := write(false)
	assert.Equal(t, "timeout", read(onPrimary, pending, mine).Header().Get("X-Consistency"), "not applied: waited for")
	_, err := d.Pool.Exec(ctx, `INSERT INTO projection_streams (projection, stream_id, version) VALUES ($1, $2, 1)`,
		readmodel.ChatbotsProjection, pending.StreamID)
	require.NoError(t, err)
	assert.Empty(t, read(onPrimary, pending, mine).Header().Get("X-Consistency"), "applied since: the wait's look finds it")

	withReplica := NewHTTP(replica, primary, nil, nil, nil, nil, waitsFor)
	require.False(t, withReplica.readsPrimary)
	got = read(withReplica, write(true), mine)
	assert.Empty(t, got.Header().Get("X-Consistency"))
	assert.Equal(t, 1, roundTrips(traced), "the owner, on the primary: %q", traced.All())
	assert.Len(t, tracedReplica.Matching(regexp.MustCompile(`projection_streams`)), 1, "the projection, where the read reads")
}

// readWithToken runs h's consistency wait for a read of the chatbots with tok's
// X-Consistency-Token, by p; a read that it lets through answers 200.
func readWithToken(h *HTTP, tok events.AppendResult, p auth.Principal) *httptest.ResponseRecorder {
	gin.SetMode(gin.TestMode)
	w := httptest.NewRecorder()
	c, _ := gin.CreateTestContext(w)
	c.Request = httptest.NewRequest(http.MethodGet, "/api/v1/chatbots", nil)
	c.Request.Header.Set("X-Consistency-Token", tok.Token())
	c.Set(auth.PrincipalKey, p)
	h.Consistency()(c)
	if !c.IsAborted() {
		c.Status(http.StatusOK)
	}
	return w
}
