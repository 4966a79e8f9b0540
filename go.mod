module github.com/fhkit/fhkit

go 1.26.8

require (
	github.com/nlpodyssey/safetensors v0.0.0-20250209183917-bfb01cc25f7c
	github.com/x448/float16 v0.8.4
	golang.org/x/sys v0.49.0
)

require github.com/stretchr/testify v1.9.0 // indirect
