//go:build !benchnoauth

package main

import (
	"github.com/gin-gonic/gin"

	"github.com/chatbotsaas/chatbotd/internal/httpx"
)

// registerBenchRoutes adds nothing: only a binary built with -tags benchnoauth (for
// `make bench`) has routes with authorization turned off.
func registerBenchRoutes(*gin.Engine, []httpx.Route) {}
