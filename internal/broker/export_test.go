package broker

// Corked reports whether c's socket is corked now (false without a socket).
func Corked(c *Conn) (bool, error) {
	c.corkMu.Lock()
	sock := c.sock
	c.corkMu.Unlock()
	if sock == nil {
		return false, nil
	}
	return corked(sock)
}
