package reactors

import (
	"net/mail"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestParseSMTPURLKeepsCredentialsOffPlainConnections(t *testing.T) {
	s, err := ParseSMTPURL("smtps://u:p@mail.example.com")
	require.NoError(t, err)
	assert.Equal(t, SMTP{Addr: "mail.example.com:465", Host: "mail.example.com", Implicit: true, Username: "u", Password: "p"}, *s)
	s, err = ParseSMTPURL("smtp://u:p@mail.example.com")
	require.NoError(t, err)
	assert.False(t, s.NoTLS, "STARTTLS is required by default")
	assert.Equal(t, "mail.example.com:587", s.Addr)
	s, err = ParseSMTPURL("smtp://127.0.0.1:2525")
	require.NoError(t, err)
	assert.True(t, s.NoTLS, "a loopback relay needs no TLS")
	s, err = ParseSMTPURL("smtp://relay.internal:25?tls=none")
	require.NoError(t, err)
	assert.True(t, s.NoTLS)
	_, err = ParseSMTPURL("smtp://u:p@relay.internal:25?tls=none")
	assert.Error(t, err)
	for _, bad := range []string{"http://mail.example.com", "mail.example.com:25", "smtp://"} {
		_, err := ParseSMTPURL(bad)
		assert.Error(t, err, bad)
	}
}

// A name cannot inject headers; the body is quoted-printable UTF-8.
func TestMailerMessageEncodesHeadersAndBody(t *testing.T) {
	m := &Mailer{From: "Chatbot SaaS <no-reply@chatbot.example>"}
	id := uuid.New()
	raw, err := m.Message(pendingEmail{id: id, kind: "welcome", toName: "Eve\r\nBcc: victim@example.com",
		toAddress: "eve@example.com", subject: "Grüße", body: "Hallo Zoë\n"}, time.Date(2026, 3, 1, 10, 0, 0, 0, time.UTC))
	require.NoError(t, err)
	msg, err := mail.ReadMessage(strings.NewReader(string(raw)))
	require.NoError(t, err)
	assert.Empty(t, msg.Header.Get("Bcc"))
	to, err := msg.Header.AddressList("To")
	require.NoError(t, err)
	require.Len(t, to, 1)
	assert.Equal(t, "eve@example.com", to[0].Address)
	assert.Equal(t, "<"+id.String()+"@chatbotd>", msg.Header.Get("Message-ID"))
	assert.Equal(t, "=?utf-8?q?Gr=C3=BC=C3=9Fe?=", msg.Header.Get("Subject"))
	assert.Contains(t, string(raw), "Hallo Zo=C3=AB")
}
