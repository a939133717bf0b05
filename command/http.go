package command

import (
	"net/http"
	"strconv"
	"strings"

	"github.com/gin-gonic/gin"
	"github.com/google/uuid"

	"github.com/chatbotsaas/chatbotd/command/domain"
	"github.com/chatbotsaas/chatbotd/events"
	"github.com/chatbotsaas/chatbotd/internal/apperr"
	"github.com/chatbotsaas/chatbotd/internal/auth"
	"github.com/chatbotsaas/chatbotd/internal/httpx"
	"github.com/chatbotsaas/chatbotd/internal/rbac"
	"github.com/chatbotsaas/chatbotd/internal/readmodel"
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
		httpx.R(http.MethodPost, "/api/v1/auth/register", rbac.Public, handle(http.StatusCreated, "Registered", h.register)),
		httpx.R(http.MethodPost, "/api/v1/auth/login", rbac.Public, handle(http.StatusOK, "Logged in", h.login)).WithCredentials(),
		httpx.R(http.MethodPost, "/api/v1/auth/refresh", rbac.Public, handle(http.StatusOK, "Token refreshed", h.refresh)).WithCredentials(),
		httpx.R(http.MethodPost, "/api/v1/auth/logout", rbac.Authenticated, handle(http.StatusOK, "Logged out", h.logout)).WithSession(),
		httpx.R(http.MethodPut, "/api/v1/auth/password", rbac.Authenticated, handle(http.StatusOK, "Password changed", h.changePassword)).WithSession(),
		httpx.R(http.MethodPost, "/api/v1/users", rbac.UsersWrite, handle(http.StatusCreated, "User created", h.createUser)),
		httpx.R(http.MethodPatch, "/api/v1/users/:id", rbac.UsersWrite, handle(http.StatusOK, "User updated", h.updateUser)),
		httpx.R(http.MethodDelete, "/api/v1/users/:id", rbac.UsersWrite, handle(http.StatusOK, "User deleted", h.deleteUser)),
		httpx.R(http.MethodPut, "/api/v1/users/:id/roles/:role", rbac.UsersWrite, handle(http.StatusOK, "Role assigned", h.assignRole)),
		httpx.R(http.MethodDelete, "/api/v1/users/:id/roles/:role", rbac.UsersWrite, handle(http.StatusOK, "Role removed", h.removeRole)),
		httpx.R(http.MethodPatch, "/api/v1/organization", rbac.OrganizationWrite, handle(http.StatusOK, "Organization updated", h.updateOrganization)),
		httpx.R(http.MethodPost, "/api/v1/roles", rbac.RolesWrite, handle(http.StatusCreated, "Role created", h.createRole)),
		httpx.R(http.MethodPatch, "/api/v1/roles/:name", rbac.RolesWrite, handle(http.StatusOK, "Role updated", h.updateRole)),
		httpx.R(http.MethodDelete, "/api/v1/roles/:name", rbac.RolesWrite, handle(http.StatusOK, "Role deleted", h.deleteRole)),
		httpx.R(http.MethodPost, "/api/v1/chatbots", rbac.ChatbotsWrite, handle(http.StatusCreated, "Chatbot created", h.createChatbot)),
		httpx.R(http.MethodPatch, "/api/v1/chatbots/:id", rbac.ChatbotsWrite, handle(http.StatusOK, "Chatbot updated", h.updateChatbot)),
		httpx.R(http.MethodDelete, "/api/v1/chatbots/:id", rbac.ChatbotsWrite, handle(http.StatusOK, "Chatbot deleted", h.deleteChatbot)),
		httpx.R(http.MethodPost, "/api/v1/chatbots/:id/publish", rbac.ChatbotsWrite, handle(http.StatusOK, "Chatbot published", h.publishChatbot(true))),
		httpx.R(http.MethodPost, "/api/v1/chatbots/:id/unpublish", rbac.ChatbotsWrite, handle(http.StatusOK, "Chatbot unpublished", h.publishChatbot(false))),
		httpx.R(http.MethodPost, "/api/v1/chatbots/:id/knowledge", rbac.ChatbotsWrite, handle(http.StatusCreated, "Knowledge entry added", h.addEntry)),
		httpx.R(http.MethodPatch, "/api/v1/chatbots/:id/knowledge/:entry_id", rbac.ChatbotsWrite, handle(http.StatusOK, "Knowledge entry updated", h.updateEntry)),
		httpx.R(http.MethodPut, "/api/v1/chatbots/:id/knowledge/:entry_id", rbac.ChatbotsWrite, handle(http.StatusOK, "Knowledge entry replaced", h.updateEntry)),
		httpx.R(http.MethodDelete, "/api/v1/chatbots/:id/knowledge/:entry_id", rbac.ChatbotsWrite, handle(http.StatusOK, "Knowledge entry removed", h.removeEntry)),
		httpx.R(http.MethodPost, "/api/v1/chatbots/:id/knowledge/import", rbac.ChatbotsWrite, handle(http.StatusCreated, "Knowledge imported", h.importEntries)).WithCSV(MaxImportBody),
		httpx.R(http.MethodPost, "/api/v1/chatbots/:id/train", rbac.ChatbotsWrite, handle(http.StatusAccepted, "Training requested", h.train)),
		httpx.R(http.MethodPost, "/api/v1/chatbots/:id/conversations", rbac.ConversationsWrite, handle(http.StatusCreated, "Conversation started", h.startConversation)),
		httpx.R(http.MethodPost, "/api/v1/conversations/:id/messages", rbac.ConversationsWrite, handle(http.StatusAccepted, "Message queued", h.postMessage)),
		httpx.R(http.MethodPost, "/api/v1/tokens", rbac.TokensWrite, handle(http.StatusCreated, "Token created", h.createToken)).WithCredentials().WithSession(),
		httpx.R(http.MethodDelete, "/api/v1/tokens/:id", rbac.TokensWrite, handle(http.StatusOK, "Token revoked", h.revokeToken)).WithSession(),
		httpx.R(http.MethodPost, "/api/v1/webhooks", rbac.WebhooksWrite, handle(http.StatusCreated, "Webhook created", h.createWebhook)),
		httpx.R(http.MethodDelete, "/api/v1/webhooks/:id", rbac.WebhooksWrite, handle(http.StatusOK, "Webhook deleted", h.deleteWebhook)),
		httpx.R(http.MethodPost, "/api/v1/admin/organizations/:id/suspend", rbac.PlatformOperate, handle(http.StatusOK, "Organization suspended", h.suspendOrganization)),
		httpx.R(http.MethodPost, "/api/v1/admin/organizations/:id/resume", rbac.PlatformOperate, handle(http.StatusOK, "Organization resumed", h.resumeOrganization)),
	}
}

// Meta is the request context that every event of a command carries.
func Meta(c *gin.Context) events.Meta {
	rid, corr := httpx.RequestIDOf(c), httpx.CorrelationIDOf(c)
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

// handle adapts a command step to Gin: it writes the answer with its consistency token,
// or the error in the envelope.
func handle[T any](status int, message string, run func(*gin.Context) (Result[T], error)) gin.HandlerFunc {
	return func(c *gin.Context) {
		res, err := run(c)
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
}

func body[T any](c *gin.Context) (T, error) {
	var in T
	return in, httpx.Decode(c, &in)
}

// target reads the {id} path parameter and the If-Match header (a stream version,
// optionally quoted like an ETag).
func target(c *gin.Context) (uuid.UUID, IfMatch, error) {
	id, err := httpx.PathUUID(c, "id")
	if err != nil {
		return id, nil, err
	}
	match, err := ifMatch(c)
	return id, match, err
}

func ifMatch(c *gin.Context) (IfMatch, error) {
	h := strings.TrimSpace(c.GetHeader("If-Match"))
	if h == "" {
		return nil, nil
	}
	v, err := strconv.Atoi(strings.Trim(strings.TrimPrefix(h, "W/"), `"`))
	if err != nil || v < 0 {
		return nil, apperr.New(apperr.CodeBadRequest, "If-Match must be a stream version")
	}
	return &v, nil
}

func (h *HTTP) register(c *gin.Context) (Result[Registered], error) {
	in, err := body[domain.Register](c)
	if err != nil {
		return Result[Registered]{}, err
	}
	return h.svc.Register(c, Meta(c), in)
}

// DeviceCookie carries the device token to browsers; other clients send the token in
// the login body.
const DeviceCookie = "chatbotd_device"

func (h *HTTP) login(c *gin.Context) (Result[TokenPair], error) {
	in, err := body[domain.Login](c)
	if err != nil {
		return Result[TokenPair]{}, err
	}
	if in.DeviceToken == "" {
		in.DeviceToken, _ = c.Cookie(DeviceCookie)
	}
	res, err := h.svc.Login(c, Meta(c), in)
	if err == nil && res.Data.DeviceToken != "" {
		c.SetSameSite(http.SameSiteStrictMode)
		c.SetCookie(DeviceCookie, res.Data.DeviceToken, int(auth.DeviceTokenTTL.Seconds()), "/api/v1/auth/login", "", true, true)
	}
	return res, err
}

func (h *HTTP) refresh(c *gin.Context) (Result[TokenPair], error) {
	in, err := body[domain.Refresh](c)
	if err != nil {
		return Result[TokenPair]{}, err
	}
	return h.svc.Refresh(c, Meta(c), in)
}

func (h *HTTP) logout(c *gin.Context) (Result[struct{}], error) {
	if _, err := body[struct{}](c); err != nil {
		return Result[struct{}]{}, err
	}
	return h.svc.Logout(c, Meta(c), principal(c))
}

func (h *HTTP) changePassword(c *gin.Context) (Result[PasswordChanged], error) {
	in, err := body[domain.ChangePassword](c)
	if err != nil {
		return Result[PasswordChanged]{}, err
	}
	return h.svc.ChangePassword(c, Meta(c), principal(c), in)
}

func (h *HTTP) createUser(c *gin.Context) (Result[readmodel.User], error) {
	in, err := body[domain.CreateUser](c)
	if err != nil {
		return Result[readmodel.User]{}, err
	}
	res, err := h.svc.CreateUser(c, Meta(c), principal(c), in)
	if err == nil {
		c.Header("Location", "/api/v1/users/"+res.Data.ID.String())
	}
	return res, err
}

func (h *HTTP) updateUser(c *gin.Context) (Result[readmodel.User], error) {
	id, match, err := target(c)
	if err != nil {
		return Result[readmodel.User]{}, err
	}
	in, err := body[domain.UpdateUser](c)
	if err != nil {
		return Result[readmodel.User]{}, err
	}
	return h.svc.UpdateUser(c, Meta(c), principal(c), id, match, in)
}

func (h *HTTP) deleteUser(c *gin.Context) (Result[readmodel.User], error) {
	id, match, err := target(c)
	if err != nil {
		return Result[readmodel.User]{}, err
	}
	return h.svc.DeleteUser(c, Meta(c), principal(c), id, match)
}

func (h *HTTP) assignRole(c *gin.Context) (Result[readmodel.User], error) {
	id, err := httpx.PathUUID(c, "id")
	if err != nil {
		return Result[readmodel.User]{}, err
	}
	return h.svc.AssignRole(c, Meta(c), principal(c), id, c.Param("role"))
}

func (h *HTTP) removeRole(c *gin.Context) (Result[readmodel.User], error) {
	id, err := httpx.PathUUID(c, "id")
	if err != nil {
		return Result[readmodel.User]{}, err
	}
	return h.svc.RemoveRole(c, Meta(c), principal(c), id, c.Param("role"))
}

func (h *HTTP) updateOrganization(c *gin.Context) (Result[readmodel.Organization], error) {
	match, err := ifMatch(c)
	if err != nil {
		return Result[readmodel.Organization]{}, err
	}
	in, err := body[domain.UpdateOrganization](c)
	if err != nil {
		return Result[readmodel.Organization]{}, err
	}
	return h.svc.UpdateOrganization(c, Meta(c), principal(c), match, in)
}

func (h *HTTP) createToken(c *gin.Context) (Result[CreatedToken], error) {
	in, err := body[domain.CreateToken](c)
	if err != nil {
		return Result[CreatedToken]{}, err
	}
	return h.svc.CreateToken(c, Meta(c), principal(c), in)
}

func (h *HTTP) createWebhook(c *gin.Context) (Result[WebhookView], error) {
	in, err := body[domain.CreateWebhook](c)
	if err != nil {
		return Result[WebhookView]{}, err
	}
	res, err := h.svc.CreateWebhook(c, Meta(c), principal(c), in)
	if err == nil {
		c.Header("Location", "/api/v1/webhooks/"+res.Data.ID.String())
	}
	return res, err
}

func (h *HTTP) deleteWebhook(c *gin.Context) (Result[struct{}], error) {
	id, err := httpx.PathUUID(c, "id")
	if err != nil {
		return Result[struct{}]{}, err
	}
	return h.svc.DeleteWebhook(c, Meta(c), principal(c), id)
}

func (h *HTTP) suspendOrganization(c *gin.Context) (Result[readmodel.Organization], error) {
	id, err := httpx.PathUUID(c, "id")
	if err != nil {
		return Result[readmodel.Organization]{}, err
	}
	in, err := body[domain.SuspendOrganization](c)
	if err != nil {
		return Result[readmodel.Organization]{}, err
	}
	return h.svc.SuspendOrganization(c, Meta(c), principal(c), id, in)
}

func (h *HTTP) resumeOrganization(c *gin.Context) (Result[readmodel.Organization], error) {
	id, err := httpx.PathUUID(c, "id")
	if err != nil {
		return Result[readmodel.Organization]{}, err
	}
	return h.svc.ResumeOrganization(c, Meta(c), principal(c), id)
}

func (h *HTTP) revokeToken(c *gin.Context) (Result[struct{}], error) {
	id, err := httpx.PathUUID(c, "id")
	if err != nil {
		return Result[struct{}]{}, err
	}
	return h.svc.RevokeToken(c, Meta(c), principal(c), id)
}

func (h *HTTP) createRole(c *gin.Context) (Result[RoleView], error) {
	in, err := body[domain.CreateRole](c)
	if err != nil {
		return Result[RoleView]{}, err
	}
	return h.svc.CreateRole(c, Meta(c), principal(c), in)
}

func (h *HTTP) updateRole(c *gin.Context) (Result[RoleView], error) {
	match, err := ifMatch(c)
	if err != nil {
		return Result[RoleView]{}, err
	}
	in, err := body[domain.UpdateRole](c)
	if err != nil {
		return Result[RoleView]{}, err
	}
	return h.svc.UpdateRole(c, Meta(c), principal(c), c.Param("name"), match, in)
}

func (h *HTTP) deleteRole(c *gin.Context) (Result[RoleView], error) {
	match, err := ifMatch(c)
	if err != nil {
		return Result[RoleView]{}, err
	}
	return h.svc.DeleteRole(c, Meta(c), principal(c), c.Param("name"), match)
}

func (h *HTTP) createChatbot(c *gin.Context) (Result[readmodel.Chatbot], error) {
	in, err := body[domain.CreateChatbot](c)
	if err != nil {
		return Result[readmodel.Chatbot]{}, err
	}
	res, err := h.svc.CreateChatbot(c, Meta(c), principal(c), in)
	if err == nil {
		c.Header("Location", "/api/v1/chatbots/"+res.Data.ID.String())
	}
	return res, err
}

func (h *HTTP) updateChatbot(c *gin.Context) (Result[readmodel.Chatbot], error) {
	id, match, err := target(c)
	if err != nil {
		return Result[readmodel.Chatbot]{}, err
	}
	in, err := body[domain.UpdateChatbot](c)
	if err != nil {
		return Result[readmodel.Chatbot]{}, err
	}
	return h.svc.UpdateChatbot(c, Meta(c), principal(c), id, match, in)
}

func (h *HTTP) deleteChatbot(c *gin.Context) (Result[readmodel.Chatbot], error) {
	id, match, err := target(c)
	if err != nil {
		return Result[readmodel.Chatbot]{}, err
	}
	return h.svc.DeleteChatbot(c, Meta(c), principal(c), id, match)
}

func (h *HTTP) publishChatbot(publish bool) func(*gin.Context) (Result[readmodel.Chatbot], error) {
	return func(c *gin.Context) (Result[readmodel.Chatbot], error) {
		id, err := httpx.PathUUID(c, "id")
		if err != nil {
			return Result[readmodel.Chatbot]{}, err
		}
		if _, err := body[struct{}](c); err != nil {
			return Result[readmodel.Chatbot]{}, err
		}
		return h.svc.PublishChatbot(c, Meta(c), principal(c), id, publish)
	}
}
