package domain

import (
	"strings"

	"github.com/chatbotsaas/chatbotd/events"
	"github.com/chatbotsaas/chatbotd/internal/apperr"
)

// OrganizationSuspendedStatus is an organization's status while suspended.
const OrganizationSuspendedStatus = "suspended"

// PlatformOrganizationName is the name of the organization that holds the operators.
const PlatformOrganizationName = "Platform operators"

// DecideSuspendOrganization suspends an active organization; suspending a suspended one
// changes nothing.
func DecideSuspendOrganization(o Organization, reason string) ([]events.Event, error) {
	switch {
	case !o.Exists:
		return nil, apperr.NotFound("organization")
	case o.Platform:
		return nil, apperr.Conflict("the platform operators' organization cannot be suspended")
	case o.Status == OrganizationSuspendedStatus:
		return nil, nil
	}
	return []events.Event{events.OrganizationSuspended{Reason: reason}}, nil
}

// DecideResumeOrganization lifts a suspension; resuming an active organization changes
// nothing.
func DecideResumeOrganization(o Organization) ([]events.Event, error) {
	switch {
	case !o.Exists:
		return nil, apperr.NotFound("organization")
	case o.Status != OrganizationSuspendedStatus:
		return nil, nil
	}
	return []events.Event{events.OrganizationResumed{}}, nil
}

// SuspendOrganization is POST /admin/organizations/{id}/suspend.
type SuspendOrganization struct {
	Reason string `json:"reason"`
}

// Validate checks the reason.
func (c *SuspendOrganization) Validate() error {
	f := apperr.Fields{}
	c.Reason = strings.TrimSpace(c.Reason)
	if c.Reason == "" {
		f.Add("reason", "is required")
	} else if len([]rune(c.Reason)) > 500 {
		f.Add("reason", "must be at most 500 characters")
	}
	return f.Err()
}

// CreateOperator is `chatbotd admin create`.
type CreateOperator struct {
	Name     string
	Email    string
	Password string
}

// Validate checks and normalizes the input.
func (c *CreateOperator) Validate() error {
	f := apperr.Fields{}
	c.Name = strings.TrimSpace(c.Name)
	c.Email = NormalizeEmail(c.Email)
	checkName(f, "name", c.Name)
	checkEmail(f, "email", c.Email)
	checkPassword(f, "password", c.Password)
	return f.Err()
}
