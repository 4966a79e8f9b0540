package serve

import (
	"context"
	"testing"
	"time"
)

// BenchmarkLoad reports the load generator's throughput against an
// in-process server on the embedded default (gemma3-tiny with a FlashHead):
// one client alone, then 32 clients, each sending 4 streamed requests of
// 64 tokens.
func BenchmarkLoad(b *testing.B) {
	ts := startServer(b, true, nil)
	for _, clients := range []int{1, 32} {
		b.Run("clients="+string(rune('0'+clients/10))+string(rune('0'+clients%10)), func(b *testing.B) {
			var tps float64
			for i := 0; i < b.N; i++ {
				rep, err := Load(context.Background(), LoadConfig{URL: ts.url, Clients: clients, Requests: 4, MaxTokens: 64,
					Prompt: "Tell me a story about a lighthouse keeper.", Stream: true, IgnoreEOS: true, Timeout: time.Minute})
				if err != nil || rep.Errors > 0 {
					b.Fatalf("%v %+v", err, rep)
				}
				tps += rep.TokensPerSecond
			}
			b.ReportMetric(tps/float64(b.N), "tok/s")
		})
	}
}
