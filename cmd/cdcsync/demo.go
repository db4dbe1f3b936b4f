package main

func demoCommand() command {
	return pending("demo", "one-command local run: throwaway Postgres, Redis and development broker, capture, sinks, live stats")
}
