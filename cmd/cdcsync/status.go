package main

func statusCommand() command {
	return pending("status", "slot lag, topic end offsets and consumer lag per sink")
}
