module github.com/gofanout/fanout/examples

go 1.26.0

require github.com/gofanout/fanout v0.0.0-00010101000000-000000000000

require (
	github.com/cenkalti/backoff/v4 v4.3.0 // indirect
	go.uber.org/goleak v1.3.0 // indirect
	golang.org/x/time v0.16.0 // indirect
)

replace github.com/gofanout/fanout => ../
