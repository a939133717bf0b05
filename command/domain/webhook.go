package domain

import (
	"net/url"
	"slices"
	"strings"

	"github.com/chatbotsaas/chatbotd/events"
	"github.com/chatbotsaas/chatbotd/internal/apperr"
)

// Webhook subscription statuses.
const (
	WebhookActive   = "active"
	WebhookDisabled = "disabled"
	WebhookDeleted  = "deleted"

	maxWebhookPatterns = 20
	maxURLLen          = 2048
)

// Webhook is a webhook subscription's state.
type Webhook struct {
	Exists bool
	Status string
	URL    string
	Events []string
}

// EvolveWebhook applies one event.
func EvolveWebhook(w Webhook, e events.Event) Webhook {
	switch e := e.(type) {
	case events.WebhookCreated:
		w = Webhook{Exists: true, Status: WebhookActive, URL: e.URL, Events: e.Events}
	case events.WebhookDisabled:
		if w.Status == WebhookActive {
			w.Status = WebhookDisabled
		}
	case events.WebhookDeleted:
		w.Status = WebhookDeleted
	}
	return w
}

// CreateWebhook is POST /webhooks.
type CreateWebhook struct {
	URL    string   `json:"url"`
	Events []string `json:"events"`
	// Secret signs the deliveries; when left out, one is generated and shown once.
	Secret *string `json:"secret"`
}

// Validate checks the input: an http(s) URL, 1 to 20 topic patterns over event types,
// and a secret of 16 to 256 bytes when one is given.
func (c *CreateWebhook) Validate() error {
	f := apperr.Fields{}
	c.URL = strings.TrimSpace(c.URL)
	if u, err := url.Parse(c.URL); c.URL == "" || err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
		f.Add("url", "must be an http or https URL")
	} else if len(c.URL) > maxURLLen {
		f.Add("url", "must be at most 2048 characters")
	}
	switch {
	case len(c.Events) == 0:
		f.Add("events", `must name at least one event type or pattern, e.g. "conversation.*"`)
	case len(c.Events) > maxWebhookPatterns:
		f.Add("events", "must have at most 20 patterns")
	}
	for _, p := range c.Events {
		if err := events.CheckTopicPattern(p); err != nil {
			f.Add("events", err.Error())
		}
	}
	slices.Sort(c.Events)
	c.Events = slices.Compact(c.Events)
	if c.Secret != nil && (len(*c.Secret) < 16 || len(*c.Secret) > 256) {
		f.Add("secret", "must be 16 to 256 bytes")
	}
	return f.Err()
}

// DecideCreateWebhook subscribes.
func DecideCreateWebhook(w Webhook, c CreateWebhook) ([]events.Event, error) {
	if w.Exists {
		return nil, apperr.Conflict("the webhook exists already")
	}
	return []events.Event{events.WebhookCreated{URL: c.URL, Events: c.Events}}, nil
}

// DecideDeleteWebhook unsubscribes; a disabled subscription can be deleted too.
func DecideDeleteWebhook(w Webhook) ([]events.Event, error) {
	if !w.Exists || w.Status == WebhookDeleted {
		return nil, apperr.NotFound("webhook")
	}
	return []events.Event{events.WebhookDeleted{}}, nil
}
