module github.com/gofanout/fanout/examples

go 1.25.0

require (
	github.com/gofanout/fanout v0.0.0-00010101000000-000000000000
	go.uber.org/goleak v1.3.0
	golang.org/x/time v0.15.0
)

require github.com/cenkalti/backoff/v4 v4.3.0 // indirect

replace github.com/gofanout/fanout => ../
