package command

import (
	"net/http"
	"strconv"
	"strings"

	"github.com/gin-gonic/gin"

	"github.com/chatbotsaas/chatbotd/events"
	"github.com/chatbotsaas/chatbotd/internal/apperr"
	"github.com/chatbotsaas/chatbotd/internal/auth"
	"github.com/chatbotsaas/chatbotd/internal/httpx"
)

// HTTP is the command endpoints.
type HTTP struct {
	svc *Service
}

// NewHTTP returns the command endpoints over svc.
func NewHTTP(svc *Service) *HTTP { return &HTTP{svc: svc} }

// Routes lists the command endpoints with their access.
func (h *HTTP) Routes() []httpx.Route {
	return []httpx.Route{
		httpx.R(http.MethodPost, "/api/v1/auth/register", auth.Public, h.register),
		httpx.R(http.MethodPost, "/api/v1/auth/login", auth.Public, h.login).WithCredentials(),
		httpx.R(http.MethodPost, "/api/v1/auth/refresh", auth.Public, h.refresh).WithCredentials(),
		httpx.R(http.MethodPost, "/api/v1/auth/logout", auth.Authenticated, h.logout),
		httpx.R(http.MethodPost, "/api/v1/users", auth.UsersWrite, h.createUser),
		httpx.R(http.MethodPatch, "/api/v1/users/:id", auth.UsersWrite, h.updateUser),
		httpx.R(http.MethodDelete, "/api/v1/users/:id", auth.UsersWrite, h.deleteUser),
		httpx.R(http.MethodPut, "/api/v1/users/:id/roles/:role", auth.UsersWrite, h.assignRole),
		httpx.R(http.MethodDelete, "/api/v1/users/:id/roles/:role", auth.UsersWrite, h.removeRole),
		httpx.R(http.MethodPatch, "/api/v1/organization", auth.OrganizationWrite, h.updateOrganization),
	}
}

// Meta is the request context that every event of a command carries.
func Meta(c *gin.Context) events.Meta {
	rid := httpx.RequestIDOf(c)
	corr := c.GetHeader("X-Correlation-ID")
	if corr == "" || len(corr) > 128 {
		corr = rid
	}
	ua := c.Request.UserAgent()
	if len(ua) > 512 {
		ua = ua[:512]
	}
	return events.Meta{RequestID: rid, CorrelationID: corr,
		Metadata: events.Metadata{IPAddress: c.ClientIP(), UserAgent: ua}}
}

func principal(c *gin.Context) auth.Principal {
	p, _ := auth.PrincipalOf(c)
	return p
}

// respond writes a command's answer with its consistency token.
func respond[T any](c *gin.Context, status int, message string, res Result[T], err error) {
	if err != nil {
		httpx.Fail(c, err)
		return
	}
	meta := gin.H{}
	if res.Token.StreamID != [16]byte{} {
		c.Header("X-Consistency-Token", res.Token.Token())
		meta = gin.H{"stream_id": res.Token.StreamID, "stream_version": res.Token.Version, "position": res.Token.Position}
	}
	httpx.OK(c, status, message, res.Data, meta)
}

func decode[T any](c *gin.Context) (T, bool) {
	var in T
	if err := httpx.Decode(c, &in); err != nil {
		httpx.Fail(c, err)
		return in, false
	}
	return in, true
}

// ifMatch reads If-Match: a stream version, optionally quoted (an ETag).
func ifMatch(c *gin.Context) (IfMatch, bool) {
	h := strings.TrimSpace(c.GetHeader("If-Match"))
	if h == "" {
		return nil, true
	}
	v, err := strconv.Atoi(strings.Trim(strings.TrimPrefix(h, "W/"), `"`))
	if err != nil || v < 0 {
		httpx.Fail(c, apperr.New(apperr.CodeBadRequest, "If-Match must be a stream version"))
		return nil, false
	}
	return &v, true
}

func (h *HTTP) register(c *gin.Context) {
	in, ok := decode[Register](c)
	if !ok {
		return
	}
	res, err := h.svc.Register(c.Request.Context(), Meta(c), in)
	respond(c, http.StatusCreated, "Registered", res, err)
}

func (h *HTTP) login(c *gin.Context) {
	in, ok := decode[Login](c)
	if !ok {
		return
	}
	res, err := h.svc.Login(c.Request.Context(), Meta(c), in)
	respond(c, http.StatusOK, "Logged in", res, err)
}

func (h *HTTP) refresh(c *gin.Context) {
	in, ok := decode[Refresh](c)
	if !ok {
		return
	}
	res, err := h.svc.Refresh(c.Request.Context(), Meta(c), in)
	respond(c, http.StatusOK, "Token refreshed", res, err)
}

func (h *HTTP) logout(c *gin.Context) {
	if _, ok := decode[struct{}](c); !ok {
		return
	}
	res, err := h.svc.Logout(c.Request.Context(), Meta(c), principal(c))
	respond(c, http.StatusOK, "Logged out", res, err)
}

func (h *HTTP) createUser(c *gin.Context) {
	in, ok := decode[CreateUser](c)
	if !ok {
		return
	}
	res, err := h.svc.CreateUser(c.Request.Context(), Meta(c), principal(c), in)
	if err == nil {
		c.Header("Location", "/api/v1/users/"+res.Data.ID.String())
	}
	respond(c, http.StatusCreated, "User created", res, err)
}

func (h *HTTP) updateUser(c *gin.Context) {
	id, err := httpx.PathUUID(c, "id")
	if err != nil {
		httpx.Fail(c, err)
		return
	}
	match, ok := ifMatch(c)
	if !ok {
		return
	}
	in, ok := decode[UpdateUser](c)
	if !ok {
		return
	}
	res, err := h.svc.UpdateUser(c.Request.Context(), Meta(c), principal(c), id, match, in)
	respond(c, http.StatusOK, "User updated", res, err)
}

func (h *HTTP) deleteUser(c *gin.Context) {
	id, err := httpx.PathUUID(c, "id")
	if err != nil {
		httpx.Fail(c, err)
		return
	}
	match, ok := ifMatch(c)
	if !ok {
		return
	}
	res, err := h.svc.DeleteUser(c.Request.Context(), Meta(c), principal(c), id, match)
	respond(c, http.StatusOK, "User deleted", res, err)
}

func (h *HTTP) assignRole(c *gin.Context) {
	id, err := httpx.PathUUID(c, "id")
	if err != nil {
		httpx.Fail(c, err)
		return
	}
	res, err := h.svc.AssignRole(c.Request.Context(), Meta(c), principal(c), id, c.Param("role"))
	respond(c, http.StatusOK, "Role assigned", res, err)
}

func (h *HTTP) removeRole(c *gin.Context) {
	id, err := httpx.PathUUID(c, "id")
	if err != nil {
		httpx.Fail(c, err)
		return
	}
	res, err := h.svc.RemoveRole(c.Request.Context(), Meta(c), principal(c), id, c.Param("role"))
	respond(c, http.StatusOK, "Role removed", res, err)
}

func (h *HTTP) updateOrganization(c *gin.Context) {
	match, ok := ifMatch(c)
	if !ok {
		return
	}
	in, ok := decode[UpdateOrganization](c)
	if !ok {
		return
	}
	res, err := h.svc.UpdateOrganization(c.Request.Context(), Meta(c), principal(c), match, in)
	respond(c, http.StatusOK, "Organization updated", res, err)
}
