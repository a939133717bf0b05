package main

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"slices"
	"sync/atomic"
	"time"

	"github.com/gin-gonic/gin"
	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"
	amqp "github.com/rabbitmq/amqp091-go"
	"github.com/redis/go-redis/v9"

	"github.com/chatbotsaas/chatbotd/command"
	"github.com/chatbotsaas/chatbotd/events"
	"github.com/chatbotsaas/chatbotd/events/eventstore"
	"github.com/chatbotsaas/chatbotd/internal/auth"
	"github.com/chatbotsaas/chatbotd/internal/broker"
	"github.com/chatbotsaas/chatbotd/internal/cache"
	"github.com/chatbotsaas/chatbotd/internal/config"
	"github.com/chatbotsaas/chatbotd/internal/db"
	"github.com/chatbotsaas/chatbotd/internal/httpx"
	"github.com/chatbotsaas/chatbotd/internal/metrics"
	"github.com/chatbotsaas/chatbotd/internal/netguard"
	"github.com/chatbotsaas/chatbotd/internal/ratelimit"
	"github.com/chatbotsaas/chatbotd/internal/rbac"
	"github.com/chatbotsaas/chatbotd/internal/readmodel"
	"github.com/chatbotsaas/chatbotd/internal/retry"
	"github.com/chatbotsaas/chatbotd/internal/secretbox"
	"github.com/chatbotsaas/chatbotd/projections"
	"github.com/chatbotsaas/chatbotd/projections/reactors"
	"github.com/chatbotsaas/chatbotd/query"
)

// deps are the connections every role shares.
type deps struct {
	cfg     config.Config
	logger  *slog.Logger
	pool    *pgxpool.Pool // primary: the event store and the projectors
	read    *pgxpool.Pool // the query side (a replica when DATABASE_READ_URL says so)
	rdb     redis.UniversalClient
	cache   *cache.Cache
	broker  *broker.Conn
	store   *eventstore.Store
	storeID uuid.UUID // the store's identity: stamped on what the relay publishes, kept to by consumers
	metrics *metrics.Metrics
	// applied tells waiting reads that a projector committed a batch (set by serve).
	applied *projections.AppliedNotifier
}

func openDeps(ctx context.Context, cfg config.Config, logger *slog.Logger) (*deps, error) {
	d := &deps{cfg: cfg, logger: logger, metrics: metrics.New()}
	var err error
	if d.pool, err = db.Open(ctx, cfg.DatabaseURL, cfg.DatabaseMaxConn); err != nil {
		return nil, err
	}
	if d.read, err = db.Open(ctx, cfg.DatabaseReadURL, cfg.DatabaseMaxConn); err != nil {
		d.pool.Close()
		return nil, err
	}
	rdb, epoch, err := cache.Open(cfg.RedisURL, cache.Local{Entries: cfg.RedisLocalEntries, MaxStaleness: cfg.RedisLocalMaxStaleness})
	if err != nil {
		d.read.Close()
		d.pool.Close()
		return nil, err
	}
	d.rdb = rdb
	d.cache = cache.New(d.rdb, cfg.RedisPrefix, 10*time.Minute)
	d.cache.FollowMasters(epoch)
	d.cache.Instrument(d.metrics)
	if d.storeID, err = eventstore.Identity(ctx, d.pool); err != nil {
		d.read.Close()
		d.pool.Close()
		return nil, err
	}
	d.broker = broker.Dial(cfg.AMQPURL, logger)
	d.store = eventstore.NewStore(d.pool)
	d.store.Instrument(d.metrics)
	return d, nil
}

func (d *deps) close() {
	d.store.Close()
	_ = d.broker.Close()
	_ = d.rdb.Close()
	d.read.Close()
	d.pool.Close()
}

func (m *Main) serve(ctx context.Context, cfg config.Config, roles map[string]bool, logger *slog.Logger) error {
	if err := migrate(ctx, cfg, logger); err != nil {
		return fmt.Errorf("start: %w", err)
	}
	d, err := openDeps(ctx, cfg, logger)
	if err != nil {
		return err
	}
	defer d.close()
	keys, err := d.loadKeys(ctx)
	if err != nil {
		return err
	}
	// Every part is built whatever the roles: their queues are declared before any event
	// is published, so no event is published before its queues exist.
	d.applied = projections.NewAppliedNotifier(d.pool, logger.With("component", "projection-notifications"))
	parts, err := d.buildParts(keys)
	if err != nil {
		return err
	}

	// Every return from here on waits for the workers started so far (deferred after
	// d.close, so it runs first): none of them outlives serve or uses a closed pool.
	work := newWorkers(ctx, logger)
	defer work.stop()
	// The exchange and every queue are declared once, on one channel, before any worker
	// starts: RabbitMQ 3.10 answers concurrent declarations of one new quorum queue with
	// INTERNAL_ERROR, which closes the whole connection.
	topology := make(chan struct{})
	work.wg.Add(1)
	go func() {
		defer work.wg.Done()
		if err := declareTopology(work.ctx, d, parts, roles[roleProjectors], topology); err != nil {
			select { // the first failure: nothing has started yet
			case work.failed <- err:
			default:
			}
		}
	}()
	work.ready = topology
	if roles[roleRelay] {
		if err := d.startRelay(work, parts, keys.chain); err != nil {
			return err
		}
	}
	if roles[roleProjectors] {
		d.startConsumers(work, parts)
	}
	var ready atomic.Bool
	var srv *http.Server
	serveErr := make(chan error, 1)
	if roles[roleAPI] {
		if srv, err = m.listen(ctx, d, keys, &ready, work, serveErr); err != nil {
			return err
		}
	}
	if cfg.PprofAddr != "" {
		stopPprof, err := servePprof(cfg.PprofAddr, logger)
		if err != nil {
			return err
		}
		defer stopPprof()
	}
	logger.Info("chatbotd started", "roles", roles, "env", cfg.AppEnv)

	var runErr error
	select {
	case <-ctx.Done():
	case err := <-serveErr:
		runErr = fmt.Errorf("http server: %w", err)
	case err := <-work.failed:
		runErr = err
	}
	logger.Info("shutting down")
	ready.Store(false)
	if srv != nil {
		sctx, cancel := context.WithTimeout(context.Background(), cfg.ShutdownTimeout)
		if err := srv.Shutdown(sctx); err != nil {
			logger.Warn("http shutdown", "error", err)
		}
		cancel()
	}
	work.stop()
	logger.Info("stopped")
	return runErr
}

// processKeys are the process's secrets: SECRETS_KEY's (webhook secrets, device tokens,
// idempotency rows) and the audit chain's.
type processKeys struct {
	secrets []byte
	box     *secretbox.Box
	chain   events.ChainKey
}

func (d *deps) loadKeys(ctx context.Context) (processKeys, error) {
	var k processKeys
	var err error
	if k.secrets, err = configuredKey(ctx, d.pool, d.logger, "SECRETS_KEY", d.cfg.SecretsKey, "secretbox"); err != nil {
		return k, err
	}
	if k.box, err = secretbox.New(k.secrets); err != nil {
		return k, err
	}
	k.chain, err = chainKey(ctx, d.pool, d.logger, d.cfg.AuditSigningKey)
	return k, err
}

// parts are the consumers of the stream a process may run, built from the registry
// (projections.Parts): a Runner per projector and reactor on the projector runtime, the
// webhook responder on the watermill consumer, and the outbox workers the projectors
// feed.
type parts struct {
	runners []*projections.Runner
	// partitioned are the projectors run by partitions (projections.Partitions); their
	// queues follow the layout recorded in the database.
	partitioned []*projections.Runner
	// retired are the group's members on runners of their own, for the queues an earlier
	// version gave each of them (projections.Partitions.Retired).
	retired  []*projections.Runner
	webhooks reactors.Consumer
	// webhookSweep is how the sweep checks the webhook responder.
	webhookSweep *projections.WebhookSweep
	outboxes     []namedRun
}

type namedRun struct {
	name string
	run  func(context.Context) error
}

// queues are every queue the parts consume, but the partitioned projectors' (see
// declareLayouts).
func (p parts) queues() []broker.QueueSpec {
	queues := []broker.QueueSpec{p.webhooks.Queue}
	for _, r := range p.runners {
		queues = append(queues, r.Queue())
	}
	return queues
}

func (d *deps) buildParts(k processKeys) (parts, error) {
	cfg, logger := d.cfg, d.logger
	all, err := d.runners()
	if err != nil {
		return parts{}, err
	}
	retired, err := d.retiredRunners()
	if err != nil {
		return parts{}, err
	}
	var runners, partitioned []*projections.Runner
	for _, r := range all {
		if projections.Partitionable(r) {
			partitioned = append(partitioned, r)
		} else {
			runners = append(runners, r)
		}
	}
	var smtp *reactors.SMTP
	if cfg.SMTPURL != "" {
		if smtp, err = reactors.ParseSMTPURL(cfg.SMTPURL); err != nil {
			return parts{}, err
		}
	}
	guard := netguard.Guard{AllowPrivate: cfg.AllowPrivateTargets}
	responder := reactors.WebhookResponder{Store: d.store, Pool: d.pool, Box: k.box, Client: reactors.WebhookClient(guard, cfg.WebhookTimeout),
		Attempts: cfg.WebhookAttempts, Backoff: cfg.WebhookBackoff, Logger: logger.With("consumer", reactors.WebhookResponderName)}
	deliverer := &reactors.WebhookDeliverer{Pool: d.pool, Store: d.store, Box: k.box,
		Client: reactors.WebhookClient(guard, cfg.WebhookTimeout), Timeout: cfg.WebhookTimeout,
		Workers: cfg.WebhookDeliveryWorkers, Attempts: cfg.WebhookDeliveryAttempts, RetryBase: cfg.WebhookRetryBase,
		RetryMax: cfg.WebhookRetryMax, DisableAfter: cfg.WebhookDisableAfter, Retention: cfg.WebhookDeliveryRetention,
		Logger: logger.With("component", "webhook-deliveries"), Metrics: d.metrics}
	mailer := &reactors.Mailer{Pool: d.pool, From: cfg.SMTPFrom, Timeout: 30 * time.Second, Attempts: 8, Workers: 4,
		RetryBase: time.Minute, Logger: logger.With("component", "mailer"), Metrics: d.metrics, SMTP: smtp}
	return parts{runners: runners, partitioned: partitioned, retired: retired,
		webhooks: reactors.Consumer{Name: reactors.WebhookResponderName, Conn: d.broker, Workers: cfg.WebhookWorkers, Logger: logger.With("consumer", reactors.WebhookResponderName),
			Queue: webhookResponderQueue(cfg), Metrics: d.metrics, Handle: responder.Handle, DeadLettered: responder.DeadLettered,
			Store: d.storeID},
		webhookSweep: &projections.WebhookSweep{Queue: webhookResponderQueue(cfg).Name, Hold: responder.Longest(), Store: d.storeID},
		outboxes:     []namedRun{{"webhook deliveries", deliverer.Run}, {"mailer", mailer.Run}},
	}, nil
}

// startRelay starts the relay (which publishes only once queues are declared) and the
// audit chainer; both run on every relay-role process and one of each is active.
func (d *deps) startRelay(work *workers, p parts, chain events.ChainKey) error {
	tap := &eventstore.Tap{} // the chainer links what the relay read, when it leads here
	relay, err := eventstore.NewRelay(d.pool, d.broker, eventstore.RelayConfig{Exchange: d.cfg.AMQPExchange,
		BatchSize: d.cfg.RelayBatchSize, Queues: p.queues(), Local: d.store, Tap: tap, Logger: d.logger.With("component", "relay"), Metrics: d.metrics,
		Frames: true, // the projectors' group takes frames (projections.Runner.Queue)
		Declare: func(ctx context.Context, ch *amqp.Channel) error {
			return projections.DeclareLayouts(ctx, d.pool, ch, p.partitioned)
		}})
	if err != nil {
		return err
	}
	work.start("relay", relay.Run)
	chainer := &eventstore.Chainer{Pool: d.pool, Key: chain, BatchSize: d.cfg.RelayBatchSize, Tap: tap, Logger: d.logger.With("component", "audit-chain")}
	work.start("audit chain", chainer.Run)
	return nil
}

// startConsumers starts every part, and the housekeeping of what they write.
func (d *deps) startConsumers(work *workers, p parts) {
	for _, r := range p.runners {
		n := 1
		if r.Name() == reactors.ResponderName {
			n = d.cfg.ResponderWorkers // competing consumers: messages are independent streams
		}
		for range n {
			work.start("projector "+r.Name(), r.Run)
		}
	}
	partitions := &projections.Partitions{Pool: d.pool, Broker: d.broker, Runners: p.partitioned, Retired: p.retired,
		Partitions: d.cfg.ProjectorPartitions, Logger: d.logger}
	work.start("projector partitions", partitions.Run)
	sweep := &projections.Sweep{Pool: d.pool, Broker: d.broker, Runners: append(slices.Clone(p.runners), p.partitioned...),
		WebhookResponder: p.webhookSweep, Interval: d.cfg.ProjectorSweepInterval, Logger: d.logger.With("component", "sweep"), Metrics: d.metrics}
	work.start("projection sweep", sweep.Run)
	pending := &projections.PendingLists{Pool: d.pool, Interval: d.cfg.GINMergeInterval,
		Logger: d.logger.With("component", "gin-pending-lists"), Metrics: d.metrics}
	work.start("GIN pending lists", pending.Run)
	work.start("projection notifications", d.applied.Run)
	work.start("webhook responder", p.webhooks.Run)
	if d.cfg.SMTPURL == "" {
		d.logger.Warn("SMTP_URL is not set: emails are written to the log")
	}
	for _, o := range p.outboxes {
		work.start(o.name, o.run)
	}
	work.start("message partitions", func(ctx context.Context) error { return keepPartitions(ctx, d) })
	work.start("cache repair", func(ctx context.Context) error {
		projections.NewAccounts(d.pool, d.cache, d.logger.With("component", "cache-repair")).RepairCache(ctx, time.Second)
		return nil
	})
}

// listen serves the API on HTTP_ADDR until the returned server is shut down; the
// server's end is sent on serveErr. ready is /ready's answer.
func (m *Main) listen(ctx context.Context, d *deps, k processKeys, ready *atomic.Bool, work *workers, serveErr chan<- error) (*http.Server, error) {
	cfg := d.cfg
	handler, err := newAPI(ctx, d, k.secrets, k.chain, ready, work.start)
	if err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", cfg.HTTPAddr)
	if err != nil {
		return nil, fmt.Errorf("listen on %s: %w", cfg.HTTPAddr, err)
	}
	srv := &http.Server{
		Handler:           handler,
		ReadHeaderTimeout: cfg.ReadHeaderTimeout,
		ReadTimeout:       cfg.ReadTimeout,
		WriteTimeout:      cfg.WriteTimeout,
		IdleTimeout:       cfg.IdleTimeout,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          slog.NewLogLogger(d.logger.Handler(), slog.LevelWarn),
	}
	go func() { serveErr <- srv.Serve(ln) }()
	ready.Store(true)
	d.logger.Info("api listening", "addr", ln.Addr().String())
	if m.Listening != nil {
		m.Listening <- ln.Addr().String()
	}
	return srv, nil
}

// newAPI builds the Gin engine with every route. secrets is SECRETS_KEY's key: the keys
// of device tokens and of the idempotency table derive from it. start runs its
// background work (the listeners of the authentication cache and of the consistency
// waits).
func newAPI(ctx context.Context, d *deps, secrets []byte, chain events.ChainKey, ready *atomic.Bool,
	start func(name string, run func(context.Context) error)) (http.Handler, error) {
	cfg := d.cfg
	keys, err := auth.KeysFromConfig(cfg.JWTSigningKeys)
	if err != nil {
		return nil, err
	}
	if len(keys) == 0 {
		k, err := auth.LoadOrCreateKey(ctx, d.pool)
		if err != nil {
			return nil, fmt.Errorf("signing key: %w", err)
		}
		d.logger.Warn("JWT_SIGNING_KEYS is not set: using the development key kept in the database")
		keys = []auth.Key{k}
	}
	tokens, err := auth.NewTokens(keys, cfg.JWTIssuer, cfg.JWTAudience, cfg.AccessTTL)
	if err != nil {
		return nil, err
	}
	box, err := secretbox.New(secrets)
	if err != nil {
		return nil, err
	}
	limiter := ratelimit.New(d.rdb, cfg.RedisPrefix, d.logger)
	authn := auth.NewAuthenticator(tokens, d.pool, cfg.AuthCacheTTL)
	authn.Logger = d.logger.With("component", "auth")
	start("auth cache", authn.Listen)
	svc := command.NewService(command.Deps{Store: d.store, Hasher: auth.NewHasher(cfg.PasswordHashConcurrency),
		Tokens: tokens, RefreshTTL: cfg.RefreshTTL, Logger: d.logger, Box: box, AuthChanged: authn,
		Guard:    netguard.Guard{AllowPrivate: cfg.AllowPrivateTargets},
		Throttle: ratelimit.NewLoginThrottle(limiter, cfg.LoginFailuresPerIP, cfg.LoginFailuresPerEmail),
		Devices:  auth.NewDevices(secretbox.Derive(secrets, "device-tokens"))})
	authn.OnDenied = func(c *gin.Context, p auth.Principal, permission string) {
		if err := svc.RecordAccessDenied(c, command.Meta(c), p, c.Request.Method, c.FullPath(), permission); err != nil {
			d.logger.Warn("record access denied", "error", err, "request_id", httpx.RequestIDOf(c))
		}
	}

	gin.SetMode(gin.ReleaseMode)
	r := gin.New()
	r.HandleMethodNotAllowed = true
	r.ContextWithFallback = true
	if err := r.SetTrustedProxies(cfg.TrustedProxies); err != nil {
		return nil, fmt.Errorf("TRUSTED_PROXIES: %w", err)
	}
	r.NoRoute(httpx.RequestID(), httpx.SecurityHeaders(), httpx.NoRoute)
	r.NoMethod(httpx.RequestID(), httpx.SecurityHeaders(), httpx.NoMethod)
	r.Use(httpx.RequestID(), httpx.SecurityHeaders(), d.metrics.HTTP(), httpx.Recover(), httpx.Logger(d.logger), httpx.PlainText())
	d.metrics.RegisterGauges("status", 5*time.Second, d.gauges)

	idem := httpx.Idempotency(d.pool, httpx.IdempotencyKeys{HashKey: secretbox.Derive(secrets, "idempotency"), Box: box},
		func(c *gin.Context) string {
			if p, ok := auth.PrincipalOf(c); ok {
				return "user:" + p.UserID.String()
			}
			return "ip:" + c.ClientIP()
		})
	publicLimit := limiter.Middleware(ratelimit.PerMinute(cfg.RateLimitPublic), func(c *gin.Context) string { return "ip:" + c.ClientIP() })
	apiLimit := limiter.Middleware(ratelimit.PerMinute(cfg.RateLimitAPI), func(c *gin.Context) string {
		p, _ := auth.PrincipalOf(c)
		return p.Credential
	})
	// Reads that wait for a consistency token wake when a projector, in any process,
	// commits (its own connection, to the primary: a standby cannot LISTEN).
	applied := readmodel.NewApplied(d.pool.Config().ConnConfig, d.logger.With("component", "consistency"))
	start("consistency notifications", applied.Listen)
	if cfg.DatabaseReadURL == cfg.DatabaseURL {
		// Reads on the database the projectors commit to: a batch committed in this process
		// ends their waits at once, without its notification's round trips.
		d.applied.SetLocal(func(projection string, versions map[uuid.UUID]int) { applied.Committed(d.read, projection, versions) })
	}
	queries := query.NewHTTP(d.read, d.pool, d.cache, tokens, chain, applied, projections.WaitsFor())
	routes := apiRoutes(command.NewHTTP(svc), queries, &operations{d: d, ready: ready})
	for _, rt := range routes {
		if rt.Access == "" {
			return nil, fmt.Errorf("route %s %s declares no access", rt.Method, rt.Path)
		}
		handlers := []gin.HandlerFunc{httpx.Body(rt.MaxBody, rt.CSV)}
		if rt.Method != http.MethodGet {
			handlers = append(handlers, countCommand(d.metrics, rt.Method+" "+rt.Path))
		}
		if rt.Credentials {
			handlers = append(handlers, httpx.NoStore())
		}
		switch {
		case unlimited(rt.Path):
			handlers = append(handlers, authn.Middleware(rt.Access)) // probes are never limited
		case rt.Access == rbac.Public:
			handlers = append(handlers, publicLimit, authn.Middleware(rt.Access))
		default:
			handlers = append(handlers, authn.Middleware(rt.Access), apiLimit)
		}
		if rt.Session {
			handlers = append(handlers, auth.SessionOnly())
		}
		if rt.Method == http.MethodGet && rt.Access != rbac.Public {
			// After authentication and the rate limit: nobody else makes a read wait.
			handlers = append(handlers, queries.Consistency())
		}
		if !rt.Credentials {
			handlers = append(handlers, idem)
		}
		r.Handle(rt.Method, rt.Path, append(handlers, rt.Handler)...)
	}
	registerBenchRoutes(r, routes)
	return r, nil
}

// runners builds the runner of every part of the registry that the projector runtime
// runs. They are built whatever the roles: their queues are declared before any event is
// published, so no event is published before its queues exist; and the operators'
// commands read their queues' names and bindings.
func (d *deps) runners() ([]*projections.Runner, error) {
	deps := projections.Deps{Pool: d.pool, Cache: d.cache, Store: d.store, Logger: d.logger}
	group, err := d.runner(projections.NewProjectorGroup(deps), d.cfg.ProjectorBatchSize)
	if err != nil {
		return nil, err
	}
	runners := []*projections.Runner{group}
	for _, part := range projections.Parts() {
		if part.Projector == nil || part.Grouped() {
			continue // a runtime of its own, or the group's
		}
		r, err := d.runner(part.Projector(deps), d.cfg.ReactorBatchSize)
		if err != nil {
			return nil, err
		}
		runners = append(runners, r)
	}
	return runners, nil
}

// retiredRunners are a runner for each member of the group alone (see parts.retired).
func (d *deps) retiredRunners() ([]*projections.Runner, error) {
	deps := projections.Deps{Pool: d.pool, Cache: d.cache, Store: d.store, Logger: d.logger}
	var out []*projections.Runner
	for _, part := range projections.Parts() {
		if !part.Grouped() {
			continue
		}
		r, err := d.runner(part.Projector(deps), d.cfg.ProjectorBatchSize)
		if err != nil {
			return nil, err
		}
		out = append(out, r)
	}
	return out, nil
}

// runner builds p's runner, applying batches of up to batch events.
func (d *deps) runner(p projections.Projector, batch int) (*projections.Runner, error) {
	cfg := d.cfg
	// The group's members build read models and append nothing: its batches may commit
	// without waiting for the disk, and are acknowledged once they are on it.
	_, group := p.(*projections.Group)
	return projections.NewRunner(d.pool, d.broker, p, projections.Config{Exchange: cfg.AMQPExchange,
		QueuePrefix: cfg.AMQPQueuePrefix, BatchSize: batch,
		DeliveryLimit: cfg.ProjectorDeliveryLimit, Logger: d.logger, Metrics: d.metrics, Applied: d.applied, Store: d.storeID,
		DeferFlush: group})
}

// webhookResponderQueue is the queue of the consumer that calls chatbots' webhooks.
func webhookResponderQueue(cfg config.Config) broker.QueueSpec {
	var bindings []string
	for _, p := range projections.Parts() {
		if p.Name == reactors.WebhookResponderName {
			bindings = p.Bindings
		}
	}
	return broker.QueueSpec{Name: cfg.AMQPQueuePrefix + reactors.WebhookResponderName, Exchange: cfg.AMQPExchange,
		Bindings: bindings, DeliveryLimit: cfg.ProjectorDeliveryLimit}
}

// tracked lists every part of the registry, whose progress operators watch, by name.
func (d *deps) tracked() ([]projections.Tracked, error) {
	runners, err := d.runners()
	if err != nil {
		return nil, err
	}
	queues := map[string]broker.QueueSpec{reactors.WebhookResponderName: webhookResponderQueue(d.cfg)}
	partitioned := map[string]bool{}
	layouts := map[string]string{}
	for _, r := range runners {
		queues[r.Name()] = r.Queue()
		partitioned[r.Name()] = projections.Partitionable(r)
		if r.Name() == projections.GroupName {
			for _, m := range r.Members() {
				queues[m], partitioned[m], layouts[m] = r.MemberQueue(m), projections.Partitionable(r), projections.GroupName
			}
		}
	}
	var out []projections.Tracked
	for _, p := range projections.Parts() {
		q, ok := queues[p.Name]
		if !ok {
			return nil, fmt.Errorf("part %s has no queue", p.Name)
		}
		out = append(out, projections.Tracked{Name: p.Name, Queue: q, Positions: p.Projector != nil, Rebuildable: p.Rebuildable,
			Partitioned: partitioned[p.Name], Layout: layouts[p.Name]})
	}
	// The group's own line: its queue, and its dead letters, which are no one projector's
	// (an undecodable message, one redelivered past PROJECTOR_DELIVERY_LIMIT).
	return append(out, projections.Tracked{Name: projections.GroupName, Queue: queues[projections.GroupName],
		Partitioned: partitioned[projections.GroupName]}), nil
}

// countCommand counts a command by its outcome once it is answered: "ok", or the error
// code of its answer (refusals by authentication or rate limits included).
func countCommand(m *metrics.Metrics, name string) gin.HandlerFunc {
	return func(c *gin.Context) {
		c.Next()
		m.Command(name, c.GetString(httpx.ErrorCodeKey))
	}
}

// declareTopology claims the queue names for this deployment's store
// (broker.ClaimQueues), declares the event exchange and the queues, retrying until the
// broker answers, then closes done. Names claimed by another store are an error that
// ends serve: retrying would not change it. A process of the projectors role first
// switches the partitioned projectors' layout to its PROJECTOR_PARTITIONS where it can
// (projections.Switch; a layout whose queues were never declared is switched at once, with
// nothing to drain); projections.Partitions carries on with what is left.
func declareTopology(ctx context.Context, d *deps, p parts, projectors bool, done chan<- struct{}) error {
	exchange, queues := d.cfg.AMQPExchange, p.queues()
	var pause retry.Backoff
	for {
		err := func() error {
			claim, err := d.broker.Channel(ctx)
			if err != nil {
				return err
			}
			err = broker.ClaimQueues(ctx, claim, d.cfg.AMQPQueuePrefix, d.storeID.String())
			claim.Close()
			if err != nil {
				return err
			}
			ch, err := d.broker.Channel(ctx)
			if err != nil {
				return err
			}
			defer ch.Close()
			if err := broker.DeclareEventExchange(ch, exchange); err != nil {
				return err
			}
			for _, q := range queues {
				if err := broker.DeclareQueue(ch, q); err != nil {
					return err
				}
			}
			if projectors {
				for _, r := range p.partitioned {
					if _, err := projections.Switch(ctx, d.pool, d.broker, r, d.cfg.ProjectorPartitions); err != nil &&
						!errors.Is(err, projections.ErrDraining) {
						return err
					}
				}
			}
			return projections.DeclareLayouts(ctx, d.pool, ch, p.partitioned)
		}()
		if err == nil {
			close(done)
			return nil
		}
		if errors.Is(err, broker.ErrClaimed) {
			return err
		}
		if ctx.Err() != nil {
			return nil
		}
		wait := pause.Next()
		d.logger.Warn("declare broker topology, retrying", "error", err, "in", wait)
		if !retry.Sleep(ctx.Done(), wait) {
			return nil
		}
	}
}

// keepPartitions creates the messages table's monthly partitions three months ahead,
// at start and twice a day.
func keepPartitions(ctx context.Context, d *deps) error {
	for {
		if _, err := d.pool.Exec(ctx, `SELECT ensure_message_partitions(now(), 3)`); err != nil && ctx.Err() == nil {
			d.logger.Warn("message partitions", "error", err)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(12 * time.Hour):
		}
	}
}

// chainKey is the key that signs the audit chain: AUDIT_SIGNING_KEY, or (development) a
// key made once and kept in the database.
func chainKey(ctx context.Context, pool *pgxpool.Pool, logger *slog.Logger, configured string) (events.ChainKey, error) {
	key, err := configuredKey(ctx, pool, logger, "AUDIT_SIGNING_KEY", configured, "audit-chain")
	if err != nil {
		return nil, err
	}
	return events.NewChainKey(key)
}

// configuredKey decodes a base64 key from the configuration, or, when it is not set,
// returns the development key called name, kept in the database (made on first use).
func configuredKey(ctx context.Context, pool *pgxpool.Pool, logger *slog.Logger, variable, configured, name string) ([]byte, error) {
	if configured != "" {
		key, err := base64.StdEncoding.DecodeString(configured)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", variable, err)
		}
		return key, nil
	}
	key := make([]byte, 32)
	if _, err := rand.Read(key); err != nil {
		return nil, err
	}
	if _, err := pool.Exec(ctx, `INSERT INTO local_keys (name, key) VALUES ($1, $2) ON CONFLICT DO NOTHING`, name, key); err != nil {
		return nil, fmt.Errorf("%s: %w", variable, err)
	}
	if err := pool.QueryRow(ctx, `SELECT key FROM local_keys WHERE name = $1`, name).Scan(&key); err != nil {
		return nil, fmt.Errorf("%s: %w", variable, err)
	}
	logger.Warn(variable + " is not set: using the development key kept in the database")
	return key, nil
}

// apiRoutes is every route the API serves.
func apiRoutes(c *command.HTTP, q *query.HTTP, o *operations) []httpx.Route {
	routes := append(c.Routes(), q.Routes()...)
	return append(routes, o.routes()...)
}
