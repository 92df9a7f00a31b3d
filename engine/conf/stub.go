package conf

// Config is a stub until the parser lands.
type Config struct{}
