// Package backoffv5test checks that fanout works with
// github.com/cenkalti/backoff/v5, which the core does not import: v5's
// permanent and retry-after errors, and its ExponentialBackOff as a
// fanout.BackOff. It is a module of its own so that the core's go.mod
// does not gain v5.
package backoffv5test
