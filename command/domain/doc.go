// Package domain is the write side's decisions, with no infrastructure (a test in
// events/purity_test.go says so): each aggregate's state, its Evolve function (one event
// applied) and its Decide functions (a command's events, or why not), the commands'
// inputs with their validation, and the rules written once (one reply per message, who
// may act on an owner). They take plain values, never a request or a connection: the
// command handlers (package command) load, authorize and append around them, and the
// reactors call the same decisions.
package domain
