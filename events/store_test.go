package events_test

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/chatbotsaas/chatbotd/events"
	"github.com/chatbotsaas/chatbotd/events/eventstore"
	"github.com/chatbotsaas/chatbotd/internal/apperr"
	"github.com/chatbotsaas/chatbotd/internal/testenv"
)

func userCreated(name string) events.Event {
	return events.UserCreated{Name: name, Email: name + "@example.com", Roles: []string{"member"}, Status: "active"}
}

func appendUser(t *testing.T, s *eventstore.Store, stream uuid.UUID, expected int, evs ...events.Event) (events.AppendResult, error) {
	t.Helper()
	org := uuid.New()
	return s.Append(context.Background(), eventstore.AppendRequest{
		StreamType: events.StreamUser, StreamID: stream, ExpectedVersion: expected, OrganizationID: &org,
		Events: evs, Meta: events.Meta{Actor: events.Actor{Type: events.ActorSystem}},
	})
}

func TestAppendConcurrentSameExpectedVersionOneWins(t *testing.T) {
	d := testenv.MustDatabase(t)
	s := eventstore.NewStore(d.Pool)
	stream := uuid.New()
	_, err := appendUser(t, s, stream, 0, userCreated("a"))
	require.NoError(t, err)

	var wins, conflicts atomic.Int32
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := 0; i < 50; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			_, err := appendUser(t, s, stream, 1, events.UserDeactivated{})
			switch {
			case err == nil:
				wins.Add(1)
			case apperr.CodeOf(err) == apperr.CodeConflict:
				conflicts.Add(1)
			default:
				t.Errorf("unexpected error: %v", err)
			}
		}()
	}
	close(start)
	wg.Wait()
	assert.EqualValues(t, 1, wins.Load())
	assert.EqualValues(t, 49, conflicts.Load())
	got, err := s.ReadStream(context.Background(), stream, 1, 0)
	require.NoError(t, err)
	require.Len(t, got, 2)
	assert.Equal(t, "user.deactivated", got[1].Type)
}

func TestAppendAnyVersionRetriesConcurrentWriters(t *testing.T) {
	d := testenv.MustDatabase(t)
	s := eventstore.NewStore(d.Pool)
	stream := uuid.New()
	var wg sync.WaitGroup
	for i := 0; i < 6; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := appendUser(t, s, stream, eventstore.AnyVersion, events.UserRoleAssigned{Role: "admin"})
			assert.NoError(t, err)
		}()
	}
	wg.Wait()
	got, err := s.ReadStream(context.Background(), stream, 1, 0)
	require.NoError(t, err)
	require.Len(t, got, 6)
	for i, e := range got {
		assert.Equal(t, i+1, e.StreamVersion)
	}
}

func TestAppendIsIdempotentByEventID(t *testing.T) {
	d := testenv.MustDatabase(t)
	s := eventstore.NewStore(d.Pool)
	stream, org := uuid.New(), uuid.New()
	req := eventstore.AppendRequest{
		StreamType: events.StreamUser, StreamID: stream, ExpectedVersion: 0, OrganizationID: &org,
		Events:   []events.Event{userCreated("x"), events.UserRoleAssigned{Role: "admin"}},
		EventIDs: []uuid.UUID{uuid.New(), uuid.New()},
		Meta:     events.Meta{Actor: events.Actor{Type: events.ActorSystem}, RequestID: "r1"},
	}
	first, err := s.Append(context.Background(), req)
	require.NoError(t, err)
	again, err := s.Append(context.Background(), req)
	require.NoError(t, err)
	assert.Equal(t, first, again)
	got, err := s.ReadStream(context.Background(), stream, 1, 0)
	require.NoError(t, err)
	require.Len(t, got, 2)
	assert.Equal(t, "r1", got[0].RequestID)
	assert.Equal(t, org, *got[0].OrganizationID)
	ev, err := got[0].Decode()
	require.NoError(t, err)
	assert.Equal(t, userCreated("x"), ev)
}

func TestAppendRollsBackWhenAlsoFails(t *testing.T) {
	d := testenv.MustDatabase(t)
	s := eventstore.NewStore(d.Pool)
	stream, org := uuid.New(), uuid.New()
	_, err := s.Append(context.Background(), eventstore.AppendRequest{
		StreamType: events.StreamUser, StreamID: stream, OrganizationID: &org,
		Events: []events.Event{userCreated("y")}, Meta: events.Meta{Actor: events.Actor{Type: events.ActorSystem}},
		Also: func(ctx context.Context, tx pgx.Tx) error { return apperr.New(apperr.CodeEmailTaken, "taken") },
	})
	assert.Equal(t, apperr.CodeEmailTaken, apperr.CodeOf(err))
	got, err := s.ReadStream(context.Background(), stream, 1, 0)
	require.NoError(t, err)
	assert.Empty(t, got)
}

func TestAppendRefusesEventOfAnotherStreamType(t *testing.T) {
	d := testenv.MustDatabase(t)
	s := eventstore.NewStore(d.Pool)
	_, err := s.Append(context.Background(), eventstore.AppendRequest{
		StreamType: events.StreamSession, StreamID: uuid.New(),
		Events: []events.Event{userCreated("z")}, Meta: events.Meta{Actor: events.Actor{Type: events.ActorSystem}},
	})
	require.Error(t, err)
}

func TestEventLogIsAppendOnly(t *testing.T) {
	d := testenv.MustDatabase(t)
	s := eventstore.NewStore(d.Pool)
	_, err := appendUser(t, s, uuid.New(), 0, userCreated("q"))
	require.NoError(t, err)
	_, err = d.Pool.Exec(context.Background(), `UPDATE events SET data = '{}'`)
	require.Error(t, err)
	_, err = d.Pool.Exec(context.Background(), `DELETE FROM events`)
	require.Error(t, err)
}
