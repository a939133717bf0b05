package command

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"

	"github.com/chatbotsaas/chatbotd/command/domain"
	"github.com/chatbotsaas/chatbotd/internal/apperr"
)

func TestParseCSV(t *testing.T) {
	rows, err := ParseCSV(strings.NewReader("question,answer,tags\n\"How do I pay?\",By card,billing;payments\nWhere are you?,\"Berlin, Germany\",\n"))
	assert.NoError(t, err)
	assert.Equal(t, []domain.EntryInput{
		{Question: "How do I pay?", Answer: "By card", Tags: []string{"billing", "payments"}},
		{Question: "Where are you?", Answer: "Berlin, Germany"},
	}, rows)
	_, err = ParseCSV(strings.NewReader("q,a\nx,y\n"))
	var he *apperr.Error
	if assert.ErrorAs(t, err, &he) {
		assert.Contains(t, he.Fields["csv"][0], "header row")
	}
	_, err = ParseCSV(strings.NewReader(""))
	assert.Error(t, err)
	_, err = ParseCSV(strings.NewReader("question,answer,tags\nonly one field\n"))
	assert.ErrorContains(t, err, "VALIDATION_ERROR")
	// Row validation names each bad row; nothing partial.
	rows, err = ParseCSV(strings.NewReader("question,answer\nfine,ok\n,missing question\n"))
	assert.NoError(t, err)
	err = domain.ValidateImport(rows)
	var e *apperr.Error
	if assert.ErrorAs(t, err, &e) {
		assert.Contains(t, e.Fields, "entries[1].question")
		assert.NotContains(t, e.Fields, "entries[0].question")
	}
}
