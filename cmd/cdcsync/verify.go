package main

func verifyCommand() command {
	return pending("verify", "compare the order database with the inventory store and Redis; exit 0 only without drift")
}
