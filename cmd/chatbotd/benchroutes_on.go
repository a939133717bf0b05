//go:build benchnoauth

package main

import (
	"net/http"

	"github.com/gin-gonic/gin"
	"github.com/google/uuid"

	"github.com/chatbotsaas/chatbotd/internal/auth"
	"github.com/chatbotsaas/chatbotd/internal/httpx"
	"github.com/chatbotsaas/chatbotd/internal/rbac"
)

// benchRoutes are the routes `make bench` also calls with authentication turned off, to
// measure what authorization costs and to compare the handlers with a bare CRUD one.
var benchRoutes = map[string]bool{
	http.MethodGet + " /api/v1/users/:id": true,
	http.MethodPost + " /api/v1/chatbots": true,
}

// registerBenchRoutes mounts each of benchRoutes again under /bench/noauth: the very
// handler, with the principal made up from ?org= and ?user= as an owner of that
// organization. This file is compiled only with -tags benchnoauth; no other build has
// these routes.
func registerBenchRoutes(r *gin.Engine, routes []httpx.Route) {
	for _, rt := range routes {
		if !benchRoutes[rt.Method+" "+rt.Path] {
			continue
		}
		handler := rt.Handler
		r.Handle(rt.Method, "/bench/noauth"+rt.Path[len("/api/v1"):], func(c *gin.Context) {
			org, _ := uuid.Parse(c.Query("org"))
			user, _ := uuid.Parse(c.Query("user"))
			c.Set(auth.PrincipalKey, auth.Principal{Credential: "user:" + user.String(), UserID: user,
				OrganizationID: org, Roles: []string{"owner"}, Permissions: rbac.PermissionsOf([]string{"owner"})})
			handler(c)
		})
	}
}
