package command

import (
	"encoding/csv"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"strings"

	"github.com/gin-gonic/gin"

	"github.com/chatbotsaas/chatbotd/command/domain"
	"github.com/chatbotsaas/chatbotd/internal/apperr"
	"github.com/chatbotsaas/chatbotd/internal/httpx"
)

// MaxImportBody is the body limit of the import route: 10,000 entries do not fit in
// 1 MiB.
const MaxImportBody = 16 << 20

func (h *HTTP) addEntry(c *gin.Context) (Result[EntryView], error) {
	bot, err := httpx.PathUUID(c, "id")
	if err != nil {
		return Result[EntryView]{}, err
	}
	in, err := body[domain.EntryInput](c)
	if err != nil {
		return Result[EntryView]{}, err
	}
	return h.svc.AddEntry(c, Meta(c), principal(c), bot, in)
}

func (h *HTTP) updateEntry(c *gin.Context) (Result[EntryView], error) {
	bot, err := httpx.PathUUID(c, "id")
	if err != nil {
		return Result[EntryView]{}, err
	}
	id, err := httpx.PathUUID(c, "entry_id")
	if err != nil {
		return Result[EntryView]{}, err
	}
	if c.Request.Method == http.MethodPut {
		in, err := body[domain.EntryInput](c)
		if err != nil {
			return Result[EntryView]{}, err
		}
		return h.svc.UpdateEntry(c, Meta(c), principal(c), bot, id, in)
	}
	patch, err := body[domain.EntryPatch](c)
	if err != nil {
		return Result[EntryView]{}, err
	}
	return h.svc.PatchEntry(c, Meta(c), principal(c), bot, id, patch)
}

func (h *HTTP) removeEntry(c *gin.Context) (Result[struct{}], error) {
	bot, err := httpx.PathUUID(c, "id")
	if err != nil {
		return Result[struct{}]{}, err
	}
	id, err := httpx.PathUUID(c, "entry_id")
	if err != nil {
		return Result[struct{}]{}, err
	}
	return h.svc.RemoveEntry(c, Meta(c), principal(c), bot, id)
}

func (h *HTTP) importEntries(c *gin.Context) (Result[Imported], error) {
	bot, err := httpx.PathUUID(c, "id")
	if err != nil {
		return Result[Imported]{}, err
	}
	var rows []domain.EntryInput
	if mt, _, _ := mime.ParseMediaType(c.GetHeader("Content-Type")); mt == "text/csv" {
		rows, err = ParseCSV(c.Request.Body)
	} else {
		rows, err = body[[]domain.EntryInput](c)
	}
	if err != nil {
		return Result[Imported]{}, err
	}
	return h.svc.ImportEntries(c, Meta(c), principal(c), bot, rows)
}

// ParseCSV reads an import in CSV: a header row "question,answer,tags", then one entry a
// row, tags separated by ";". Malformed rows are named in the VALIDATION_ERROR.
func ParseCSV(r io.Reader) ([]domain.EntryInput, error) {
	cr := csv.NewReader(r)
	cr.FieldsPerRecord = -1
	cr.ReuseRecord = false
	header, err := cr.Read()
	if errors.Is(err, io.EOF) {
		return nil, apperr.Invalid("csv", "is empty: a header row question,answer,tags is required")
	}
	var tooBig *http.MaxBytesError
	if errors.As(err, &tooBig) {
		return nil, apperr.New(apperr.CodePayloadTooLarge, "The request body is too large")
	}
	if err != nil {
		return nil, apperr.Invalid("csv", "row 1: "+err.Error())
	}
	for i := range header {
		header[i] = strings.ToLower(strings.TrimSpace(strings.TrimPrefix(header[i], "\ufeff")))
	}
	if len(header) < 2 || header[0] != "question" || header[1] != "answer" || (len(header) == 3 && header[2] != "tags") || len(header) > 3 {
		return nil, apperr.Invalid("csv", "the header row must be question,answer,tags")
	}
	f := apperr.Fields{}
	var rows []domain.EntryInput
	for line := 2; ; line++ {
		rec, err := cr.Read()
		if errors.Is(err, io.EOF) {
			break
		}
		if errors.As(err, &tooBig) {
			return nil, apperr.New(apperr.CodePayloadTooLarge, "The request body is too large")
		}
		if err != nil {
			f.Add(fmt.Sprintf("entries[%d]", len(rows)), fmt.Sprintf("row %d: %v", line, err))
			if len(f) > 100 {
				break
			}
			continue
		}
		if len(rec) < 2 || len(rec) > 3 {
			f.Add(fmt.Sprintf("entries[%d]", len(rows)), fmt.Sprintf("row %d: must have question,answer[,tags]", line))
		}
		in := domain.EntryInput{}
		if len(rec) > 0 {
			in.Question = rec[0]
		}
		if len(rec) > 1 {
			in.Answer = rec[1]
		}
		if len(rec) > 2 && strings.TrimSpace(rec[2]) != "" {
			in.Tags = strings.Split(rec[2], ";")
		}
		rows = append(rows, in)
		if len(rows) > domain.MaxImport {
			break // domain.ValidateImport names the excess
		}
	}
	if err := f.Err(); err != nil {
		return nil, err
	}
	return rows, nil
}

func (h *HTTP) train(c *gin.Context) (Result[Training], error) {
	bot, err := httpx.PathUUID(c, "id")
	if err != nil {
		return Result[Training]{}, err
	}
	if _, err := body[struct{}](c); err != nil {
		return Result[Training]{}, err
	}
	return h.svc.RequestTraining(c, Meta(c), principal(c), bot)
}
