package reactors

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"net"
	"net/http"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/chatbotsaas/chatbotd/command/domain"
	"github.com/chatbotsaas/chatbotd/events"
	"github.com/chatbotsaas/chatbotd/events/eventstore"
	"github.com/chatbotsaas/chatbotd/internal/apperr"
	"github.com/chatbotsaas/chatbotd/internal/netguard"
	"github.com/chatbotsaas/chatbotd/internal/secretbox"
)

// WebhookResponderName is the webhook responder's queue name.
const WebhookResponderName = "webhook-responder"

// maxReply is the largest webhook answer read.
const maxReply = 64 << 10

// WebhookClient is the HTTP client for outgoing calls: a timeout, no redirects, and only
// public addresses dialled (unless the guard allows private ones).
func WebhookClient(guard netguard.Guard, timeout time.Duration) *http.Client {
	dialer := &net.Dialer{Timeout: timeout, Control: guard.Control}
	return &http.Client{
		Timeout: timeout,
		Transport: &http.Transport{DialContext: dialer.DialContext, TLSHandshakeTimeout: timeout,
			ResponseHeaderTimeout: timeout, MaxIdleConnsPerHost: 16, IdleConnTimeout: time.Minute},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
}

// WebhookResponder answers messages to webhook chatbots (an n8n-style workflow): it POSTs
// the message, signed, to the chatbot's URL and posts the JSON answer's "reply". A call
// is tried Attempts times with exponential backoff; when every attempt fails the message
// is marked failed with the reason. The reply or failure is version 2 of the message's
// stream, so a message gets one answer even when it is delivered or handled twice (the
// URL may then be called twice: at least once, answered once).
type WebhookResponder struct {
	Store    *eventstore.Store
	Pool     *pgxpool.Pool
	Box      *secretbox.Box
	Client   *http.Client
	Attempts int
	Backoff  time.Duration
	Logger   *slog.Logger
}

// WebhookRequest is what the responder POSTs.
type WebhookRequest struct {
	ChatbotID      string         `json:"chatbot_id"`
	ConversationID string         `json:"conversation_id"`
	MessageID      string         `json:"message_id"`
	Content        string         `json:"content"`
	Metadata       map[string]any `json:"metadata"`
}

// RequestBody is the JSON a workflow receives, without HTML escaping: a message's "&",
// "<" and ">" arrive as they were typed, so that a receiver that signs its own
// JSON.stringify of the parsed body (n8n's usual recipe) gets the bytes that were signed.
func RequestBody(r WebhookRequest) ([]byte, error) {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(r); err != nil {
		return nil, err
	}
	return unescapeLineSeparators(bytes.TrimSuffix(b.Bytes(), []byte("\n"))), nil
}

// unescapeLineSeparators writes U+2028 and U+2029 as themselves, as JSON.stringify does:
// encoding/json always escapes them (for JSONP), which would make a receiver's
// JSON.stringify of the parsed body differ from the signed bytes. An escaped backslash
// followed by "u2028" is left alone: escapes are read pairwise.
func unescapeLineSeparators(js []byte) []byte {
	if !bytes.Contains(js, []byte(`\u202`)) {
		return js
	}
	out := make([]byte, 0, len(js))
	for i := 0; i < len(js); i++ {
		if js[i] != '\\' || i+1 >= len(js) {
			out = append(out, js[i])
			continue
		}
		if js[i+1] == 'u' && i+5 < len(js) && (string(js[i+2:i+6]) == "2028" || string(js[i+2:i+6]) == "2029") {
			out = utf8.AppendRune(out, rune(0x2028+int(js[i+5]-'8')))
			i += 5
			continue
		}
		out = append(out, js[i], js[i+1])
		i++
	}
	return out
}

// Sign is the X-Signature header value of a body: "sha256=" and the hex HMAC-SHA256.
func Sign(secret, body []byte) string {
	m := hmac.New(sha256.New, secret)
	m.Write(body)
	return "sha256=" + hex.EncodeToString(m.Sum(nil))
}

// Handle answers one message.posted.
func (w WebhookResponder) Handle(msg *message.Message) error {
	e, err := events.DecodeEnvelope(msg.Payload)
	if err != nil {
		return err // redelivered up to the limit, then dead-lettered
	}
	if e.Type != (events.MessagePosted{}).EventType() {
		return nil
	}
	ctx := msg.Context()
	// Asked before the call: a message answered already is not sent out again.
	if m, _, err := messageState(ctx, w.Pool, e.StreamID); err != nil || !m.Awaiting() {
		return err // answered already (or the store is down: retry)
	}
	ev, err := e.Decode()
	if err != nil {
		return err
	}
	posted := ev.(events.MessagePosted)
	chatbot, err := uuid.Parse(posted.ChatbotID)
	if err != nil {
		return err
	}
	route, then, bot, err := routedTo(ctx, w.Pool, chatbot, e)
	if err != nil || route != domain.ResponderWebhook {
		return err // the knowledge-base responder answers these
	}
	if !bot.Live() {
		return w.answer(ctx, e, events.MessageFailed{ConversationID: posted.ConversationID, ChatbotID: posted.ChatbotID,
			Code: events.FailureChatbotDeleted, Reason: "the chatbot was deleted"})
	}
	// The webhook as it is now; the one it was when the message was posted if the chatbot
	// has turned to its knowledge base since (with the secret as it is now).
	responder := bot.Responder
	if responder.Type != domain.ResponderWebhook {
		responder = then.Responder
	}
	var sealed []byte
	if err := w.Pool.QueryRow(ctx, `SELECT sealed FROM chatbot_secrets WHERE chatbot_id = $1`, chatbot).Scan(&sealed); err != nil && !errors.Is(err, pgx.ErrNoRows) {
		return err
	}
	secret, err := w.Box.Open(sealed, chatbot[:])
	if err != nil {
		return w.answer(ctx, e, events.MessageFailed{ConversationID: posted.ConversationID, ChatbotID: posted.ChatbotID,
			Code: events.FailureWebhookSecret, Reason: "the webhook secret cannot be read"})
	}
	metadata, err := conversationMetadata(ctx, w.Store, posted.ConversationID)
	if err != nil {
		return err
	}
	body, err := RequestBody(WebhookRequest{ChatbotID: posted.ChatbotID, ConversationID: posted.ConversationID,
		MessageID: e.StreamID.String(), Content: posted.Content, Metadata: metadata})
	if err != nil {
		return err
	}
	reply, reason := w.Call(ctx, responder.URL, secret, body)
	if reason != "" {
		w.Logger.Warn("webhook responder failed", "message_id", e.StreamID, "chatbot_id", chatbot, "reason", reason,
			"correlation_id", e.CorrelationID)
		return w.answer(ctx, e, events.MessageFailed{ConversationID: posted.ConversationID, ChatbotID: posted.ChatbotID,
			Code: events.FailureWebhookError, Reason: reason})
	}
	return w.answer(ctx, e, events.MessageReplied{ConversationID: posted.ConversationID, ChatbotID: posted.ChatbotID,
		ReplyID: ReplyID(e.StreamID).String(), Content: reply, Source: "webhook"})
}

// DeadLettered marks a message whose every delivery failed as failed, unless it was
// answered meanwhile: nothing stays "queued" forever (the knowledge-base responder's
// rule, through the same decision).
func (w WebhookResponder) DeadLettered(ctx context.Context, e events.Envelope, cause error) {
	ev, err := e.Decode()
	posted, ok := ev.(events.MessagePosted)
	if err != nil || !ok {
		return
	}
	if err := w.answer(ctx, e, events.MessageFailed{ConversationID: posted.ConversationID, ChatbotID: posted.ChatbotID,
		Code: events.FailureUndeliverable, Reason: "the message could not be answered"}); err != nil && w.Logger != nil {
		w.Logger.Warn("webhook responder: marking a dead-lettered message failed", "message_id", e.StreamID, "error", err)
	}
}

// answer appends the reply or failure, as the domain decides on the message as it is
// now (nothing, when it was answered meanwhile); a conflict means another worker
// answered first, which is fine.
func (w WebhookResponder) answer(ctx context.Context, e events.Envelope, out events.Event) error {
	m, version, err := messageState(ctx, w.Pool, e.StreamID)
	if err != nil {
		return err
	}
	evs, err := decideAnswer(m, out)
	if err != nil || len(evs) == 0 {
		return err
	}
	_, err = w.Store.Append(ctx, answerRequest(e, version, evs))
	if apperr.CodeOf(err) == apperr.CodeConflict {
		return nil
	}
	return err
}

func conversationMetadata(ctx context.Context, store *eventstore.Store, conversation string) (map[string]any, error) {
	id, err := uuid.Parse(conversation)
	if err != nil {
		return nil, err
	}
	envs, err := store.ReadStream(ctx, id, 1, 1)
	if err != nil || len(envs) == 0 {
		return map[string]any{}, err
	}
	ev, err := envs[0].Decode()
	if err != nil {
		return nil, err
	}
	if started, ok := ev.(events.ConversationStarted); ok && started.Metadata != nil {
		return started.Metadata, nil
	}
	return map[string]any{}, nil
}

// errPermanent marks a failure that another attempt would not change.
type errPermanent struct{ reason string }

func (e errPermanent) Error() string { return e.reason }

// Longest is the longest Handle takes over a message, from its delivery to its answer in
// the log: every attempt's timeout, the pauses between them, and a margin for the reads
// and the append around the call. The sweep waits that long before it takes an
// unanswered message for lost (projections.WebhookSweep).
func (w WebhookResponder) Longest() time.Duration {
	attempts := max(w.Attempts, 1)
	var d time.Duration
	if w.Client != nil {
		d = time.Duration(attempts) * w.Client.Timeout
	}
	for i := 1; i < attempts; i++ {
		d += w.Backoff << (i - 1)
	}
	return d + 5*time.Second
}

// Call POSTs body to url up to Attempts times and returns the reply, or the reason the
// last attempt failed.
func (w WebhookResponder) Call(ctx context.Context, url string, secret, body []byte) (string, string) {
	attempts := max(w.Attempts, 1)
	var last error
	for i := 0; i < attempts; i++ {
		if i > 0 {
			select {
			case <-ctx.Done():
				return "", "cancelled"
			case <-time.After(w.Backoff << (i - 1)):
			}
		}
		reply, err := w.call(ctx, url, secret, body)
		if err == nil {
			return reply, ""
		}
		last = err
		var p errPermanent
		if errors.As(err, &p) {
			break
		}
	}
	return "", fmt.Sprintf("webhook: %v", last)
}

func (w WebhookResponder) call(ctx context.Context, url string, secret, body []byte) (string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		return "", errPermanent{"bad URL"}
	}
	req.Header.Set("Content-Type", "application/json")
	// Signed as outgoing webhooks are: X-Signature over the body, and X-Webhook-Signature
	// "t=<unix time>,v1=<hex HMAC of t.body>" with X-Webhook-Timestamp, so that a receiver
	// can refuse a replayed call (its timestamp too old).
	for k, v := range WebhookHeaders(secret, body, time.Now()) {
		req.Header[k] = v
	}
	req.Header.Set("User-Agent", "chatbotd-webhook-responder")
	res, err := w.Client.Do(req)
	if err != nil {
		if errors.Is(err, netguard.ErrForbiddenAddress) {
			return "", errPermanent{"the URL resolves to an address that is not public"}
		}
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			return "", errors.New("timed out")
		}
		return "", errors.New("the request failed")
	}
	defer res.Body.Close()
	if res.StatusCode >= 300 && res.StatusCode < 400 {
		return "", errPermanent{fmt.Sprintf("redirects are refused (status %d)", res.StatusCode)}
	}
	data, err := io.ReadAll(io.LimitReader(res.Body, maxReply+1))
	if err != nil {
		return "", errors.New("reading the answer failed")
	}
	switch {
	case res.StatusCode == http.StatusRequestTimeout || res.StatusCode == http.StatusTooManyRequests || res.StatusCode >= 500:
		return "", fmt.Errorf("status %d", res.StatusCode)
	case res.StatusCode < 200 || res.StatusCode > 299:
		// Another call would get the same answer (and run the workflow again).
		return "", errPermanent{fmt.Sprintf("status %d", res.StatusCode)}
	case len(data) > maxReply:
		return "", errPermanent{"the answer is larger than 64 KiB"}
	}
	reply, err := replyOf(res.Header.Get("Content-Type"), data)
	if err != nil {
		return "", errPermanent{err.Error()} // the workflow ran: calling again would run it again
	}
	return reply, nil
}

// replyOf reads the reply out of a 2xx answer, in the forms n8n's "Respond to Webhook"
// sends: a JSON object's "reply"; a JSON array of items (its "all incoming items"), the
// first item with a reply; or a text/plain body, the text itself.
func replyOf(contentType string, data []byte) (string, error) {
	type item struct {
		Reply string `json:"reply"`
	}
	body := bytes.TrimSpace(data)
	var one item
	if json.Unmarshal(body, &one) == nil && strings.TrimSpace(one.Reply) != "" {
		return one.Reply, nil
	}
	var many []item
	if json.Unmarshal(body, &many) == nil {
		for _, it := range many {
			if strings.TrimSpace(it.Reply) != "" {
				return it.Reply, nil
			}
		}
	}
	if mt, _, _ := mime.ParseMediaType(contentType); mt == "text/plain" && len(body) > 0 && utf8.Valid(body) &&
		!json.Valid(body) {
		return string(body), nil
	}
	return "", errors.New(`the answer has no reply: JSON with a non-empty "reply" (an object, or an array of them), or text/plain, is expected`)
}
