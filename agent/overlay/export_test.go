package overlay

// PeekBatchGroup is the group the next TeardownBatch will use (tests plant a device there to
// make the batched delete fail for real).
func PeekBatchGroup() uint32 { return batchGroupBase | (batchSeq.Load()+1)&batchGroupMask }

// IsBatchGroup exposes isBatchGroup.
func IsBatchGroup(g uint32) bool { return isBatchGroup(g) }
