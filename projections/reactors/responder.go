package reactors

import (
	"context"
	"fmt"
	"strings"
	"unicode"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/chatbotsaas/chatbotd/command/domain"
	"github.com/chatbotsaas/chatbotd/events"
	"github.com/chatbotsaas/chatbotd/events/eventstore"
)

// ResponderName is the knowledge-base responder's name (its queue is chatbotd.responder).
const ResponderName = "responder"

// replyNamespace derives a reply's id from its message's, so a reply has one id however
// often it is computed.
var replyNamespace = uuid.MustParse("5b8c2d1e-7a6f-4e3d-9c0b-1a2b3c4d5e6f")

// ReplyID is the id of the bot message that answers a user message.
func ReplyID(message uuid.UUID) uuid.UUID { return uuid.NewSHA1(replyNamespace, message[:]) }

// Responder answers messages to knowledge-base chatbots: the best-matching trained entry,
// or the chatbot's fallback message. It appends message.replied at version 2 of the
// message's stream in the same transaction as its delivery bookkeeping, so a message is
// answered once however often it is delivered, and a crash before the commit leaves it
// to be answered on redelivery.
type Responder struct {
	Store *eventstore.Store
}

func (Responder) Name() string { return ResponderName }

func (Responder) Bindings() []string { return []string{"message.posted"} }

// Independent: each message is a stream of its own and is answered on its own, so the
// responder's queue takes competing consumers (RESPONDER_WORKERS in each process).
func (Responder) Independent() bool { return true }

// Match thresholds: trigram similarity of the question (or of the words of the question
// within an entry's question), with a full-text match lowering the bar.
const (
	matchSimilarity     = 0.45
	matchWithFullText   = 0.2
	fallbackSource      = "fallback"
	knowledgeBaseSource = "knowledge_base"
)

// Apply answers one posted message.
func (r Responder) Apply(ctx context.Context, tx pgx.Tx, e events.Envelope) error {
	if e.Type != (events.MessagePosted{}).EventType() {
		return nil
	}
	ev, err := e.Decode()
	if err != nil {
		return err
	}
	posted := ev.(events.MessagePosted)
	msg, version, err := messageState(ctx, tx, e.StreamID)
	if err != nil || !msg.Awaiting() {
		return err // answered (or failed) already
	}
	id, err := uuid.Parse(posted.ChatbotID)
	if err != nil {
		return fmt.Errorf("message.posted: chatbot_id: %w", err)
	}
	route, _, bot, err := routedTo(ctx, tx, id, e)
	if err != nil || route == domain.ResponderWebhook {
		return err // the webhook responder answers it
	}
	var out events.Event
	switch {
	case !bot.Live():
		out = events.MessageFailed{ConversationID: posted.ConversationID, ChatbotID: posted.ChatbotID,
			Code: events.FailureChatbotDeleted, Reason: "the chatbot was deleted"}
	default:
		reply := events.MessageReplied{ConversationID: posted.ConversationID, ChatbotID: posted.ChatbotID,
			ReplyID: ReplyID(e.StreamID).String(), Content: bot.FallbackMessage, Source: fallbackSource}
		entry, answer, found, err := bestMatch(ctx, tx, id, posted.Content)
		if err != nil {
			return err
		}
		if found {
			reply.Content, reply.Source, reply.EntryID = answer, knowledgeBaseSource, entry
		}
		out = reply
	}
	evs, err := decideAnswer(msg, out)
	if err != nil || len(evs) == 0 {
		return err
	}
	_, err = r.Store.AppendTx(ctx, tx, answerRequest(e, version, evs))
	return err
}

// DeadLettered marks a message that could not be answered as failed, unless it was
// answered meanwhile: nothing stays "queued" forever.
func (r Responder) DeadLettered(ctx context.Context, e events.Envelope, cause error) {
	ev, err := e.Decode()
	posted, ok := ev.(events.MessagePosted)
	if err != nil || !ok {
		return
	}
	msg, version, err := messageState(ctx, r.Store.Pool(), e.StreamID)
	if err != nil {
		return
	}
	evs, err := decideAnswer(msg, events.MessageFailed{ConversationID: posted.ConversationID, ChatbotID: posted.ChatbotID,
		Code: events.FailureUndeliverable, Reason: "the message could not be answered"})
	if err != nil || len(evs) == 0 {
		return
	}
	_, _ = r.Store.Append(ctx, answerRequest(e, version, evs))
}

// AfterCommit wakes the relay for the replies just committed.
func (r Responder) AfterCommit(context.Context, []events.Envelope) error {
	r.Store.Notify()
	return nil
}

// orQuery turns a question into a full-text query matching any of its words.
func orQuery(question string) string {
	words := strings.FieldsFunc(strings.ToLower(question), func(r rune) bool { return !unicode.IsLetter(r) && !unicode.IsDigit(r) })
	return strings.Join(words, " or ")
}

// bestMatch finds the trained entry that answers question best, if one does well enough.
// Candidates are the nearest questions by trigrams (an index-ordered GiST scan: short and
// misspelt questions) and entries containing all of the question's words (full text,
// stemmed); only those few are scored, so a large knowledge base costs little more than
// a small one.
//
// The nearest questions must come from the GiST index in its order, never from sorting
// every entry of the chatbot by trigram distance (10-30 µs an entry: up to 320 ms for
// 10,000). The planner chooses the sort when it expects few entries, and it expects few
// when the knowledge base was trained after the table's last ANALYZE; worse, the generic
// plan that a prepared statement settles on after five runs is then kept by the
// connection however much the table grows (BENCHMARKS.md, issue 23, seventh pass: 424 of
// 427 slow searches of a bench run sorted). So the search is planned under searchPlanning.
func bestMatch(ctx context.Context, tx pgx.Tx, chatbot uuid.UUID, question string) (string, string, bool, error) {
	var entry, answer string
	var sim, rank float64
	found := false
	b := &pgx.Batch{}
	b.Queue(searchPlanning)
	b.Queue(knowledgeSearch, chatbot, question, orQuery(question)).Query(func(rows pgx.Rows) error {
		// No row is an answer too (nothing trained matches), not an error: a batch's error
		// would drop its statements from the connection's cache.
		for rows.Next() {
			found = true
			if err := rows.Scan(&entry, &answer, &sim, &rank); err != nil {
				return err
			}
		}
		return rows.Err()
	})
	for _, end := range searchPlanningEnd {
		b.Queue(end)
	}
	if err := tx.SendBatch(ctx, b).Close(); err != nil {
		return "", "", false, err
	}
	if !found {
		return "", "", false, nil
	}
	return entry, answer, sim >= matchSimilarity || (rank > 0 && sim >= matchWithFullText), nil
}

// knowledgeSearch is bestMatch's query: $1 the chatbot, $2 the question, $3 its words
// joined by "or" (orQuery). The questions' tsqueries are subqueries, computed once: in a
// generic plan (a prepared statement's, after five runs) a function of a parameter is
// not folded into a constant, and plainto_tsquery was parsed again for each of the
// chatbot's entries (133 ms for 1,000, measured with auto_explain).
const knowledgeSearch = `
	WITH candidates AS (
		(SELECT entry_id, question, answer, search FROM knowledge_index
			WHERE chatbot_id = $1 ORDER BY question <-> $2 LIMIT 10)
		UNION
		(SELECT entry_id, question, answer, search FROM knowledge_index
			WHERE chatbot_id = $1 AND search @@ (SELECT plainto_tsquery('english', $2)) LIMIT 20)
	)
	SELECT entry_id, answer, sim, rank FROM (
		SELECT entry_id::text AS entry_id, answer,
			greatest(similarity(question, $2), word_similarity($2, question)) AS sim,
			ts_rank_cd(search, (SELECT websearch_to_tsquery('english', $3))) AS rank
		FROM candidates
	) scored
	ORDER BY sim + least(rank, 1) DESC, entry_id
	LIMIT 1`

// searchPlanning prices sorts out of knowledgeSearch's plan (enable_sort, until
// searchPlanningEnd in the same transaction): where an order can come from an index it
// does, and the sorts the query cannot do without (the candidates' union and the best
// score, a few dozen rows) stay. A plan with sorts priced out costs more than JIT's
// thresholds, so JIT is off too: it compiled each search anew, about half a second for a
// 5 ms query (measured with auto_explain).
const searchPlanning = `SELECT set_config('enable_sort', 'off', true), set_config('jit', 'off', true)`

// searchPlanningEnd gives enable_sort and jit back the values the session started with
// (two statements: reading them from pg_settings took longer than the search).
var searchPlanningEnd = []string{`RESET enable_sort`, `RESET jit`}
