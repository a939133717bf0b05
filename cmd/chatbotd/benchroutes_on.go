//go:build benchnoauth

package main

import (
	"net/http"

	"github.com/gin-gonic/gin"
	"github.com/google/uuid"

	"github.com/chatbotsaas/chatbotd/internal/auth"
	"github.com/chatbotsaas/chatbotd/internal/httpx"
)

// registerBenchRoutes mounts GET /bench/noauth/users/:id: the very handler of
// GET /api/v1/users/:id with authentication and authorization turned off (the principal
// is made up from ?org=), so `make bench` can measure what authorization costs. This file
// is compiled only with -tags benchnoauth; no other build has the route.
func registerBenchRoutes(r *gin.Engine, routes []httpx.Route) {
	for _, rt := range routes {
		if rt.Method != http.MethodGet || rt.Path != "/api/v1/users/:id" {
			continue
		}
		handler := rt.Handler
		r.GET("/bench/noauth/users/:id", func(c *gin.Context) {
			org, _ := uuid.Parse(c.Query("org"))
			c.Set(auth.PrincipalKey, auth.Principal{OrganizationID: org, Permissions: []string{auth.UsersRead}})
			handler(c)
		})
	}
}
