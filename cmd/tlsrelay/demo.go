package main

// runDemo is replaced by the lead.
func runDemo(args []string) int { return 1 }
