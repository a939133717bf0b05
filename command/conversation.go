package command

import (
	"context"
	"encoding/json"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/gin-gonic/gin"
	"github.com/google/uuid"

	"github.com/chatbotsaas/chatbotd/events"
	"github.com/chatbotsaas/chatbotd/events/eventstore"
	"github.com/chatbotsaas/chatbotd/internal/apperr"
	"github.com/chatbotsaas/chatbotd/internal/auth"
	"github.com/chatbotsaas/chatbotd/internal/httpx"
)

// Message statuses.
const (
	MessageQueued   = "queued"
	MessageAnswered = "answered"
	MessageFailed   = "failed"
)

// Conversation is a conversation's state.
type Conversation struct {
	Exists    bool
	ChatbotID uuid.UUID
}

// EvolveConversation applies one event.
func EvolveConversation(c Conversation, e events.Event) Conversation {
	if e, ok := e.(events.ConversationStarted); ok {
		id, _ := uuid.Parse(e.ChatbotID)
		c = Conversation{Exists: true, ChatbotID: id}
	}
	return c
}

// Message is a user message's state.
type Message struct {
	Exists bool
	Status string
}

// EvolveMessage applies one event.
func EvolveMessage(m Message, e events.Event) Message {
	switch e.(type) {
	case events.MessagePosted:
		m = Message{Exists: true, Status: MessageQueued}
	case events.MessageReplied:
		m.Status = MessageAnswered
	case events.MessageFailed:
		m.Status = MessageFailed
	}
	return m
}

// DecideStartConversation starts a conversation with a published chatbot.
func DecideStartConversation(bot Chatbot, chatbot uuid.UUID, metadata map[string]any) ([]events.Event, error) {
	if !bot.Live() {
		return nil, apperr.NotFound("chatbot")
	}
	if bot.Status != ChatbotPublished {
		return nil, apperr.Invalid("chatbot_id", "the chatbot is not published")
	}
	if metadata == nil {
		metadata = map[string]any{}
	}
	return []events.Event{events.ConversationStarted{ChatbotID: chatbot.String(), Metadata: metadata}}, nil
}

// DecideReply answers a queued message; an answered or failed one is not answered again.
// This is what makes a reply happen once, however often the work is done.
func DecideReply(m Message, reply events.MessageReplied) ([]events.Event, error) {
	if !m.Exists {
		return nil, apperr.NotFound("message")
	}
	if m.Status != MessageQueued {
		return nil, nil
	}
	return []events.Event{reply}, nil
}

// DecideFail marks a queued message failed.
func DecideFail(m Message, failed events.MessageFailed) ([]events.Event, error) {
	if !m.Exists {
		return nil, apperr.NotFound("message")
	}
	if m.Status != MessageQueued {
		return nil, nil
	}
	return []events.Event{failed}, nil
}

// StartConversation is POST /chatbots/{id}/conversations.
type StartConversation struct {
	Metadata map[string]any `json:"metadata"`
}

// ConversationView is a conversation as the API shows it.
type ConversationView struct {
	ID             uuid.UUID      `json:"id"`
	ChatbotID      uuid.UUID      `json:"chatbot_id"`
	OrganizationID uuid.UUID      `json:"organization_id"`
	Metadata       map[string]any `json:"metadata"`
	WelcomeMessage string         `json:"welcome_message"`
	CreatedAt      time.Time      `json:"created_at"`
}

// StartConversation opens a conversation with a published chatbot.
func (s *Service) StartConversation(ctx context.Context, meta events.Meta, p auth.Principal, chatbot uuid.UUID, c StartConversation) (Result[ConversationView], error) {
	var res Result[ConversationView]
	if err := p.Require(auth.ConversationsWrite); err != nil {
		return res, err
	}
	if b, err := json.Marshal(c.Metadata); err != nil || len(b) > 16<<10 {
		return res, apperr.Invalid("metadata", "must be an object of at most 16 KiB")
	}
	bot, err := s.liveChatbot(ctx, p, chatbot)
	if err != nil {
		return res, err
	}
	evs, err := DecideStartConversation(bot.State, chatbot, c.Metadata)
	if err != nil {
		return res, err
	}
	id := uuid.Must(uuid.NewV7())
	res.Token, err = s.store.Append(ctx, eventstore.AppendRequest{StreamType: events.StreamConversation, StreamID: id,
		ExpectedVersion: 0, OrganizationID: &p.OrganizationID, Events: evs, Meta: actor(p, meta)})
	started := evs[0].(events.ConversationStarted)
	res.Data = ConversationView{ID: id, ChatbotID: chatbot, OrganizationID: p.OrganizationID, Metadata: started.Metadata,
		WelcomeMessage: bot.State.WelcomeMessage, CreatedAt: res.Token.OccurredAt}
	return res, err
}

// PostMessage is POST /conversations/{id}/messages.
type PostMessage struct {
	Content string `json:"content"`
}

// Queued is what posting a message answers (202): the reply comes in the background.
type Queued struct {
	ID             uuid.UUID `json:"id"`
	ConversationID uuid.UUID `json:"conversation_id"`
	Status         string    `json:"status"`
}

// PostMessage accepts a user message; the responder answers it in the background.
func (s *Service) PostMessage(ctx context.Context, meta events.Meta, p auth.Principal, conversation uuid.UUID, c PostMessage) (Result[Queued], error) {
	var res Result[Queued]
	if err := p.Require(auth.ConversationsWrite); err != nil {
		return res, err
	}
	c.Content = strings.TrimSpace(c.Content)
	if n := utf8.RuneCountInString(c.Content); n == 0 || n > 4000 {
		return res, apperr.Invalid("content", "must be 1 to 4000 characters")
	}
	conv, err := load(ctx, s.store, conversation, EvolveConversation)
	if err != nil {
		return res, err
	}
	if !conv.State.Exists || conv.OrganizationID != p.OrganizationID {
		return res, apperr.NotFound("conversation")
	}
	id := uuid.Must(uuid.NewV7())
	res.Token, err = s.store.Append(ctx, eventstore.AppendRequest{StreamType: events.StreamMessage, StreamID: id,
		ExpectedVersion: 0, OrganizationID: &p.OrganizationID, Meta: actor(p, meta),
		Events: []events.Event{events.MessagePosted{ConversationID: conversation.String(), ChatbotID: conv.State.ChatbotID.String(), Content: c.Content}}})
	res.Data = Queued{ID: id, ConversationID: conversation, Status: MessageQueued}
	return res, err
}

func (h *HTTP) startConversation(c *gin.Context) (Result[ConversationView], error) {
	bot, err := httpx.PathUUID(c, "id")
	if err != nil {
		return Result[ConversationView]{}, err
	}
	in, err := body[StartConversation](c)
	if err != nil {
		return Result[ConversationView]{}, err
	}
	return h.svc.StartConversation(c, Meta(c), principal(c), bot, in)
}

func (h *HTTP) postMessage(c *gin.Context) (Result[Queued], error) {
	id, err := httpx.PathUUID(c, "id")
	if err != nil {
		return Result[Queued]{}, err
	}
	in, err := body[PostMessage](c)
	if err != nil {
		return Result[Queued]{}, err
	}
	return h.svc.PostMessage(c, Meta(c), principal(c), id, in)
}
