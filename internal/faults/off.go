//go:build !chaos

package faults

import amqp "github.com/rabbitmq/amqp091-go"

// Enabled reports whether this is the chaos build.
const Enabled = false

// Crash does nothing outside the chaos build.
func Crash(string) {}

// Duplicate does nothing outside the chaos build.
func Duplicate(*amqp.Channel, string, amqp.Delivery) {}

// Poisoned is false outside the chaos build.
func Poisoned(string, []byte) bool { return false }
