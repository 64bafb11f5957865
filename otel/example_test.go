package fanoutotel_test

import (
	"context"
	"errors"
	"fmt"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/gofanout/fanout"
	fanoutotel "github.com/gofanout/fanout/otel"
)

func ExampleObserver() {
	spans := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(spans))
	obs := fanoutotel.Observer(fanoutotel.WithTracerProvider(tp))

	tasks := []fanout.Task[string]{
		{Key: "eu", Do: func(ctx context.Context) (string, error) { return "ok", nil }},
		{Key: "us", Do: func(ctx context.Context) (string, error) { return "", errors.New("unreachable") }},
	}
	_, _ = fanout.Run(context.Background(), tasks, fanout.WithLimit(1), fanout.WithObserver(obs))

	for _, s := range spans.Ended() {
		fmt.Println(s.Name(), s.Status().Code)
	}
	// Output:
	// fanout.attempt Unset
	// fanout.attempt Error
	// fanout.run Error
}
