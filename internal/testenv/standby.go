package testenv

// StartStandby starts a physical streaming standby of p on its own port
// (see services.Postgres.StartStandby); Promote makes it a primary.
func (p *Postgres) StartStandby() (*Postgres, error) {
	s, err := p.Postgres.StartStandby()
	if err != nil {
		return nil, err
	}
	return &Postgres{s}, nil
}
