package command

import (
	"context"
	"encoding/json"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/gin-gonic/gin"
	"github.com/google/uuid"

	"github.com/chatbotsaas/chatbotd/command/domain"
	"github.com/chatbotsaas/chatbotd/events"
	"github.com/chatbotsaas/chatbotd/events/eventstore"
	"github.com/chatbotsaas/chatbotd/internal/apperr"
	"github.com/chatbotsaas/chatbotd/internal/auth"
	"github.com/chatbotsaas/chatbotd/internal/httpx"
	"github.com/chatbotsaas/chatbotd/internal/rbac"
)

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
func (s *Service) StartConversation(ctx context.Context, meta events.Meta, p auth.Principal, chatbot uuid.UUID, c domain.StartConversation) (Result[ConversationView], error) {
	var res Result[ConversationView]
	if err := p.Require(rbac.ConversationsWrite); err != nil {
		return res, err
	}
	if b, err := json.Marshal(c.Metadata); err != nil || len(b) > 16<<10 {
		return res, apperr.Invalid("metadata", "must be an object of at most 16 KiB")
	}
	bot, err := s.liveChatbot(ctx, p, chatbot)
	if err != nil {
		return res, err
	}
	evs, err := domain.DecideStartConversation(bot.State, chatbot, c.Metadata)
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

// Queued is what posting a message answers (202): the reply comes in the background.
type Queued struct {
	ID             uuid.UUID `json:"id"`
	ConversationID uuid.UUID `json:"conversation_id"`
	Status         string    `json:"status"`
}

// PostMessage accepts a user message; the responder answers it in the background.
func (s *Service) PostMessage(ctx context.Context, meta events.Meta, p auth.Principal, conversation uuid.UUID, c domain.PostMessage) (Result[Queued], error) {
	var res Result[Queued]
	if err := p.Require(rbac.ConversationsWrite); err != nil {
		return res, err
	}
	c.Content = strings.TrimSpace(c.Content)
	if n := utf8.RuneCountInString(c.Content); n == 0 || n > 4000 {
		return res, apperr.Invalid("content", "must be 1 to 4000 characters")
	}
	conv, err := load(ctx, s.store, conversation, domain.EvolveConversation)
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
	res.Data = Queued{ID: id, ConversationID: conversation, Status: domain.MessageQueued}
	return res, err
}

func (h *HTTP) startConversation(c *gin.Context) (Result[ConversationView], error) {
	bot, err := httpx.PathUUID(c, "id")
	if err != nil {
		return Result[ConversationView]{}, err
	}
	in, err := body[domain.StartConversation](c)
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
	in, err := body[domain.PostMessage](c)
	if err != nil {
		return Result[Queued]{}, err
	}
	return h.svc.PostMessage(c, Meta(c), principal(c), id, in)
}
