package fanout

// FileJournalSyncs returns how many fsyncs j made for records, so that
// tests and benchmarks can see records share them.
func FileJournalSyncs(j *FileJournal) int64 {
	j.mu.Lock()
	defer j.mu.Unlock()
	return j.syncs
}
