package domain

import (
	"github.com/google/uuid"

	"github.com/chatbotsaas/chatbotd/events"
	"github.com/chatbotsaas/chatbotd/internal/apperr"
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

// Awaiting reports whether the message still waits for its one answer (a reply or a
// failure). A responder asks before it does costly or outward work; DecideReply and
// DecideFail ask again when the answer is appended.
func (m Message) Awaiting() bool { return m.Exists && m.Status == MessageQueued }

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
	if !m.Awaiting() {
		return nil, nil
	}
	return []events.Event{reply}, nil
}

// DecideFail marks a queued message failed.
func DecideFail(m Message, failed events.MessageFailed) ([]events.Event, error) {
	if !m.Exists {
		return nil, apperr.NotFound("message")
	}
	if !m.Awaiting() {
		return nil, nil
	}
	return []events.Event{failed}, nil
}

// StartConversation is POST /chatbots/{id}/conversations.
type StartConversation struct {
	Metadata map[string]any `json:"metadata"`
}

// PostMessage is POST /conversations/{id}/messages.
type PostMessage struct {
	Content string `json:"content"`
}
