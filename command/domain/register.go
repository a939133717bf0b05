package domain

import (
	"strings"

	"github.com/chatbotsaas/chatbotd/internal/apperr"
)

// Register is POST /auth/register.
type Register struct {
	OrganizationName string `json:"organization_name"`
	Name             string `json:"name"`
	Email            string `json:"email"`
	Password         string `json:"password"`
}

// Validate checks and normalizes the input.
func (c *Register) Validate() error {
	f := apperr.Fields{}
	c.OrganizationName = strings.TrimSpace(c.OrganizationName)
	c.Name = strings.TrimSpace(c.Name)
	c.Email = NormalizeEmail(c.Email)
	checkName(f, "organization_name", c.OrganizationName)
	checkName(f, "name", c.Name)
	checkEmail(f, "email", c.Email)
	checkPassword(f, "password", c.Password)
	return f.Err()
}
