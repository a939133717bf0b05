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
	bot, err := chatbotState(ctx, tx, id)
	if err != nil {
		return err
	}
	var out events.Event
	switch {
	case !bot.Live():
		out = events.MessageFailed{ConversationID: posted.ConversationID, ChatbotID: posted.ChatbotID,
			Code: events.FailureChatbotDeleted, Reason: "the chatbot was deleted"}
	case bot.Responder.Type != domain.ResponderKnowledgeBase:
		return nil // another responder answers it
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
func bestMatch(ctx context.Context, tx pgx.Tx, chatbot uuid.UUID, question string) (string, string, bool, error) {
	var entry, answer string
	var sim, rank float64
	err := tx.QueryRow(ctx, `
		WITH candidates AS (
			(SELECT entry_id, question, answer, search FROM knowledge_index
				WHERE chatbot_id = $1 ORDER BY question <-> $2 LIMIT 10)
			UNION
			(SELECT entry_id, question, answer, search FROM knowledge_index
				WHERE chatbot_id = $1 AND search @@ plainto_tsquery('english', $2) LIMIT 20)
		)
		SELECT entry_id, answer, sim, rank FROM (
			SELECT entry_id::text AS entry_id, answer,
				greatest(similarity(question, $2), word_similarity($2, question)) AS sim,
				ts_rank_cd(search, websearch_to_tsquery('english', $3)) AS rank
			FROM candidates
		) scored
		ORDER BY sim + least(rank, 1) DESC, entry_id
		LIMIT 1`, chatbot, question, orQuery(question)).Scan(&entry, &answer, &sim, &rank)
	if err == pgx.ErrNoRows {
		return "", "", false, nil
	}
	if err != nil {
		return "", "", false, err
	}
	return entry, answer, sim >= matchSimilarity || (rank > 0 && sim >= matchWithFullText), nil
}
